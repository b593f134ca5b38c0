"""What a pretrained load leaves behind: a small plain record, and names shortened for messages.

Every family's loader (``models/i3d.py``, ``models/movinet.py``,
``models/_torch_video.py``) returns :func:`pretrained_report`'s dict and the
builders attach it to the model as ``pretrained_report`` (None without
``pretrained``), so the engines can copy it into the run record. Plain
types only: it must survive ``json.dumps`` as it is.

Framework-free, so every family can use it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["REPORT_NAMES_SHOWN", "check_partial", "few", "pretrained_report"]

# Name lists in the report are cut to this many (the count says how many in all).
REPORT_NAMES_SHOWN = 10


def few(names: Iterable[str], limit: int = 5) -> str:
    """``"a, b, c ... (12 in all)"`` for a message; ``"none"`` when empty."""
    names = list(names)
    if not names:
        return "none"
    more = f" ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_partial(pretrained, partial: bool) -> None:
    """Refuse ``pretrained_partial=True`` without a file: the flag alone would be recorded but mean nothing."""
    if partial and not pretrained:
        raise ValueError(
            "pretrained_partial=True needs a pretrained file (--pretrained PATH): it only allows that file to leave "
            "backbone parts unloaded; drop --pretrained-partial or give --pretrained"
        )


def pretrained_report(
    *,
    file: str | Path,
    tensors_loaded: int,
    unused: list[str],
    skipped_head: list[str],
    left: list[str],
    partial: bool,
    adapted: list[str] = (),
) -> dict:
    """The record of one pretrained load.

    Entries are named in the file's own units: layer names for a Keras
    ``.h5``, checkpoint keys for a TensorFlow checkpoint, state-dict keys for
    a PyTorch file. Lists keep their order and are cut to
    :data:`REPORT_NAMES_SHOWN`; each has a ``*_count``.

    Args:
        file: the file (or checkpoint prefix) read; stored absolute.
        tensors_loaded: tensors copied into the model.
        unused: file entries that matched nothing in the model (not the head).
        skipped_head: file entries of the old classifier, deliberately not loaded.
        left: model entries of the backbone that the file did not fill (only
            non-empty for a load allowed to be partial).
        partial: whether a partial load was allowed (``pretrained_partial``).
        adapted: file entries that were loaded after a change of shape that
            the run's input geometry needs (ViViT's learned position table,
            resampled from the checkpoint's frames and size to the run's);
            they are counted in ``tensors_loaded`` too.

    Returns:
        ``{"file", "tensors_loaded", "unused", "unused_count", "skipped_head",
        "skipped_head_count", "left", "left_count", "partial", "adapted", "adapted_count"}``.
    """
    return {
        "file": os.path.abspath(file),
        "tensors_loaded": int(tensors_loaded),
        "unused": [str(n) for n in unused[:REPORT_NAMES_SHOWN]],
        "unused_count": len(unused),
        "skipped_head": [str(n) for n in skipped_head[:REPORT_NAMES_SHOWN]],
        "skipped_head_count": len(skipped_head),
        "left": [str(n) for n in left[:REPORT_NAMES_SHOWN]],
        "left_count": len(left),
        "partial": bool(partial),
        "adapted": [str(n) for n in list(adapted)[:REPORT_NAMES_SHOWN]],
        "adapted_count": len(adapted),
    }
