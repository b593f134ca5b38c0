"""Leaf helpers shared by every layer: atomic files, configs, run records, metrics, preemption, TensorBoard event files.

Nothing here imports the rest of the suite (``wlasl``, ``models`` or the
application modules of ``utils``); ``make lint`` checks that with import-linter.
"""
