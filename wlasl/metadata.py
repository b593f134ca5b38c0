"""WLASL v0.3 metadata and nslt split files: parsing, validation, subsets.

The v0.3 JSON (``WLASL_v0.3.json``) is a list of ``{gloss, instances}`` in the
official class order; WLASL-N is the first N glosses and the class index is the
gloss's position (this matches the ``nslt_N.json`` files). Per instance:

* ``bbox`` ``[xmin, ymin, xmax, ymax]`` in source pixels;
* ``frame_start`` is 1-based; ``frame_end`` is inclusive and ``-1`` means "to
  the end of the video" (and can be past the real end: resolved at decode time);
* ``fps`` is nominal (25) and often not the file's real rate: we never convert
  frame numbers to times with it.

The nslt files map ``video_id -> {subset, action: [class, start, end]}``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from utils.core.ids import id_problem

__all__ = [
    "Instance",
    "MetadataError",
    "SPLITS",
    "load_wlasl",
    "load_nslt",
    "select_subset",
    "select_nslt",
]

SPLITS = ("train", "val", "test")


class MetadataError(ValueError):
    """A metadata file does not follow the WLASL schema (names file, entry, field)."""


@dataclass(frozen=True)
class Instance:
    """One WLASL video instance, validated.

    Attributes:
        video_id: the file stem (``<video_id>.mp4``).
        gloss: the word signed.
        label: class index = position of the gloss in the metadata file.
        split: ``train``, ``val`` or ``test``.
        signer_id: signer identity (for signer-independent analyses).
        bbox: ``(xmin, ymin, xmax, ymax)`` in source pixels.
        frame_start: first frame, 1-based.
        frame_end: last frame, 1-based inclusive; -1 = to the end.
        fps_nominal: the metadata's fps (not the file's real rate).
        source: the site the video came from.
        problem: ``(reason, detail)`` when this one instance cannot be used
            (an unsafe ``video_id``, a non-finite ``bbox``): preprocessing
            records it as a skip and goes on. Empty for a usable instance.
    """

    video_id: str
    gloss: str
    label: int
    split: str
    signer_id: int
    bbox: tuple[int, int, int, int]
    frame_start: int
    frame_end: int
    fps_nominal: float
    source: str = ""
    problem: tuple[str, str] | tuple[()] = ()


def _read_json(path: Path, what: str):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} not found: {path}. Pass the path to the file (the official WLASL "
            "repository ships it under start_kit/ and code/I3D/preprocess/)."
        )
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise MetadataError(
            f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
            "re-download the file, it is probably truncated."
        ) from None


def _field(entry: dict, key: str, where: str, types: type | tuple[type, ...]):
    if not isinstance(entry, dict):
        raise MetadataError(f"{where}: expected a JSON object, received {type(entry).__name__}")
    if key not in entry:
        raise MetadataError(f"{where}: missing field '{key}'")
    value = entry[key]
    # bool is an int subclass: a true/false where a number belongs is a schema error.
    if isinstance(value, bool) or not isinstance(value, types):
        expected = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise MetadataError(
            f"{where}: field '{key}' expected {expected}, received {type(value).__name__} {value!r}"
        )
    return value


def _parse_instance(raw: dict, gloss: str, label: int, where: str) -> Instance:
    video_id = _field(raw, "video_id", where, str)
    unsafe = id_problem(video_id, "video_id")
    # A hostile id is shown quoted and cut short, so the message stays one line.
    shown = repr(video_id[:60]) if unsafe else video_id
    where = f"{where} (video_id {shown})"
    bbox = _field(raw, "bbox", where, list)
    if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
        raise MetadataError(f"{where}: field 'bbox' expected [xmin, ymin, xmax, ymax], received {bbox!r}")
    frame_start = _field(raw, "frame_start", where, int)
    frame_end = _field(raw, "frame_end", where, int)
    if frame_start < 1:
        raise MetadataError(f"{where}: field 'frame_start' is 1-based, received {frame_start}")
    if frame_end != -1 and frame_end < frame_start:
        raise MetadataError(
            f"{where}: field 'frame_end' expected -1 or >= frame_start ({frame_start}), received {frame_end}"
        )
    split = _field(raw, "split", where, str)
    if split not in SPLITS:
        raise MetadataError(f"{where}: field 'split' expected one of {SPLITS}, received {split!r}")
    # Problems of one instance's values (not of the file's shape) make that
    # instance a recorded skip: the rest of the set is still usable.
    problem: tuple[str, str] | tuple[()] = ()
    if not all(math.isfinite(v) for v in bbox):
        # json reads Infinity and NaN; int(round(inf)) would raise OverflowError.
        problem = ("bbox", f"{where}: field 'bbox' expected finite numbers, received {bbox!r}; fix or drop the instance")
        bbox = [0, 0, 0, 0]
    if unsafe:
        problem = ("video_id", f"{where}: {unsafe}; rename the video file and its entry")
    return Instance(
        video_id=video_id,
        gloss=gloss,
        label=label,
        split=split,
        signer_id=_field(raw, "signer_id", where, int),
        bbox=tuple(int(round(v)) for v in bbox),
        frame_start=frame_start,
        frame_end=frame_end,
        fps_nominal=float(_field(raw, "fps", where, (int, float))),
        source=str(raw.get("source", "")),
        problem=problem,
    )


def load_wlasl(path: str | Path) -> tuple[list[str], list[Instance]]:
    """Read and validate a WLASL v0.3 JSON file.

    Args:
        path: ``WLASL_v0.3.json`` (or a file with the same schema).

    Returns:
        ``(glosses, instances)``: glosses in file order (index = label) and
        every instance of every gloss.

    Raises:
        FileNotFoundError: no such file.
        MetadataError: malformed JSON or an entry off the schema; the message
            names the gloss entry, the instance and the field.
    """
    data = _read_json(Path(path), "WLASL metadata")
    if not isinstance(data, list):
        raise MetadataError(
            f"{path}: expected a JSON list of {{gloss, instances}} (WLASL v0.3), "
            f"received {type(data).__name__}; is this an nslt_*.json? pass it with --nslt"
        )
    glosses: list[str] = []
    instances: list[Instance] = []
    seen: dict[str, str] = {}
    for i, entry in enumerate(data):
        where = f"{path}: entry {i}"
        gloss = _field(entry, "gloss", where, str)
        if gloss.splitlines() != [gloss]:
            # labels.txt holds one gloss per line: a line break inside one
            # would split it in two and shift every class name after it.
            raise MetadataError(
                f"{where}: field 'gloss' expected one line of text, received {gloss!r} "
                "(empty, or a line break such as \\n, \\r or U+2028); fix the gloss in the file"
            )
        where = f"{where} (gloss '{gloss}')"
        raw_instances = _field(entry, "instances", where, list)
        label = len(glosses)
        glosses.append(gloss)
        for j, raw in enumerate(raw_instances):
            inst = _parse_instance(raw, gloss, label, f"{where}, instance {j}")
            if inst.video_id in seen:
                raise MetadataError(
                    f"{where}, instance {j}: video_id {inst.video_id} appears twice "
                    f"(also under gloss '{seen[inst.video_id]}')"
                )
            seen[inst.video_id] = gloss
            instances.append(inst)
    return glosses, instances


def load_nslt(path: str | Path) -> dict[str, tuple[str, int, int, int]]:
    """Read an ``nslt_{100,300,1000,2000}.json`` split file.

    Returns:
        ``{video_id: (split, class, start, end)}``.
    """
    data = _read_json(Path(path), "nslt split file")
    if not isinstance(data, dict):
        raise MetadataError(
            f"{path}: expected a JSON object {{video_id: {{subset, action}}}} (nslt), "
            f"received {type(data).__name__}; is this the v0.3 JSON? pass it with --metadata"
        )
    out = {}
    for video_id, entry in data.items():
        where = f"{path}: video_id {video_id}"
        split = _field(entry, "subset", where, str)
        if split not in SPLITS:
            raise MetadataError(f"{where}: field 'subset' expected one of {SPLITS}, received {split!r}")
        action = _field(entry, "action", where, list)
        if len(action) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in action):
            raise MetadataError(f"{where}: field 'action' expected [class, start, end], received {action!r}")
        out[video_id] = (split, *action)
    return out


def select_subset(glosses: list[str], instances: list[Instance], subset: int | None) -> list[Instance]:
    """WLASL-N: the instances of the first N glosses (all when ``subset`` is None)."""
    if subset is None:
        return list(instances)
    if not 1 <= subset <= len(glosses):
        raise ValueError(
            f"--subset expected 1..{len(glosses)} (the metadata holds {len(glosses)} glosses), received {subset}"
        )
    return [inst for inst in instances if inst.label < subset]


def select_nslt(instances: list[Instance], nslt: dict, nslt_path: str | Path = "nslt") -> list[Instance]:
    """The instances an nslt file lists, checked against the metadata.

    The class index and split must agree with the v0.3 JSON: a disagreement
    means the two files come from different releases, and training on it would
    silently mislabel clips.
    """
    by_id = {inst.video_id: inst for inst in instances}
    selected = []
    for video_id, (split, label, _start, _end) in nslt.items():
        inst = by_id.get(video_id)
        if inst is None:
            raise MetadataError(
                f"{nslt_path}: video_id {video_id} is not in the metadata; use the v0.3 JSON of the same release"
            )
        if inst.label != label or inst.split != split:
            raise MetadataError(
                f"{nslt_path}: video_id {video_id} expected class {inst.label} split {inst.split} "
                f"(from the metadata), received class {label} split {split}"
            )
        selected.append(inst)
    return selected
