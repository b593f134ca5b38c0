"""Pieces the Keras families share: input normalisation and unfreezing the last K layers.

Imported inside the builders (it imports TensorFlow), so ``import models``
stays cheap.
"""

from __future__ import annotations

__all__ = ["normalisation", "unfreeze_last_layers"]


def normalisation(mean, std) -> tuple:
    """``(scale, offset)`` for a Rescaling layer on uint8 pixels: ``x * scale + offset == (x / 255 - mean) / std``.

    Scalars when the three channels agree (the layer then matches the one
    the releases were built with), per-channel lists otherwise.
    """
    scale = [1.0 / (255.0 * s) for s in std]
    offset = [-m / s for m, s in zip(mean, std)]
    if len(set(scale)) == 1 and len(set(offset)) == 1:
        return scale[0], offset[0]
    return scale, offset


def unfreeze_last_layers(layers: list, k: int, name: str) -> None:
    """Freeze every layer of ``layers`` but the last ``k`` (as the seed thesis did with ``layers[:-k]``).

    ``layers`` are the backbone's layers in the order Keras lists them
    (layers without weights count too, as in the thesis); the head is not
    among them and always trains. A frozen layer also runs its BatchNorm in
    inference mode (tf_keras does that for ``trainable = False``).

    Raises:
        ValueError: ``k`` is not in 1..len(layers).
    """
    if not 1 <= k <= len(layers):
        raise ValueError(f"unfreeze_last expected 1..{len(layers)} (layers of the {name} backbone), received {k}")
    for layer in layers[:-k]:
        layer.trainable = False
