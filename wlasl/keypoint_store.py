"""The keypoint store: ``data/<name>/`` written by keypoint extraction, read by pose models.

Layout (the clip store's, with keypoints instead of pixels)::

    store.json                keypoint layout (parts, K), max_frames, classes
    labels.txt                one gloss per line; line number = class index
    manifest.csv              one row per written clip (assembled from rows/)
    keypoints_report.json     skipped instances with reasons; frames with no
                              person or no hands, per clip
    keypoints/<video_id>.npz  points float16 (T, K, 3), present bool (T, 4),
                              frames int32 (T,) source frame indices (0-based)
    rows/<video_id>.json      the clip's manifest row, written after its .npz

``points[t, k] = (x, y, c)``: x and y are normalised by the *frame* width
and height (MediaPipe's image coordinates: 0..1 inside the frame, a little
outside for joints it places beyond the border; multiply by the row's
``width``/``height`` for pixels, and mind that the two axes have different
scales unless the frame is square). ``c`` is the landmark's confidence:
MediaPipe's visibility for body joints, 1.0 for hand and face landmarks of a
part that was found (MediaPipe gives them no per-landmark score); a part
that was not found in a frame has x = y = c = 0 and ``present[t, part]``
False. The keypoint order is :data:`PARTS` concatenated: body (MediaPipe
Pose's 33), left hand (21), right hand (21), then :data:`FACE_SUBSET` of
MediaPipe's face mesh. "Left" is the signer's left, as MediaPipe Holistic
labels it.

This module imports only numpy (and the clip store's StoreError): the pose models (main environment) and the
extraction (pose environment) both use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.core.readers import DamagedFile, delete_advice, read_npz
from wlasl.clip_store import SOURCE_COLUMNS, ClipEntry, StoreError, read_store_files

__all__ = [
    "FACE_SUBSET",
    "KEYPOINT_COLUMNS",
    "NUM_KEYPOINTS",
    "PARTS",
    "KeypointClip",
    "KeypointEntry",
    "KeypointStore",
    "KeypointStoreMeta",
    "MAX_KEYPOINT_FRAMES",
    "part_slices",
]

# Face mesh landmarks kept (of 468): enough for mouth shape, eye and brow
# movement and head pose, which carry meaning in signing; the full mesh
# would be 85% of the data for little of it.
FACE_SUBSET = (
    1,  # nose tip
    33, 133, 362, 263,  # eye corners: right outer, right inner, left inner, left outer
    159, 145, 386, 374,  # upper and lower eyelids, right then left
    70, 105, 107, 336, 334, 300,  # brows, right then left
    61, 291, 0, 17, 13, 14,  # mouth corners, outer lips top/bottom, inner lips top/bottom
    152,  # chin
    234, 454,  # cheek contour, right and left
)

# (name, number of keypoints), in array order.
PARTS = (("body", 33), ("left_hand", 21), ("right_hand", 21), ("face", len(FACE_SUBSET)))
NUM_KEYPOINTS = sum(n for _, n in PARTS)

KEYPOINT_COLUMNS = SOURCE_COLUMNS + (
    "width",  # frame size the coordinates are normalised by
    "height",
    "frames",  # T: keypoint frames stored
    "frames_body",  # frames in which each part was found
    "frames_left_hand",
    "frames_right_hand",
    "frames_face",
    "decoder",
    "status",  # ok, or '+'-joined notes: clamped, capped, short_file
    "path",  # relative to the store root
)


# Bound of the frames a keypoint clip may hold (a frame is K x 3 float16: 600 bytes).
MAX_KEYPOINT_FRAMES = 4096


@dataclass(frozen=True)
class KeypointStoreMeta:
    """What ``store.json`` of a keypoint store must hold (other keys are kept in ``KeypointStore.meta``)."""

    num_keypoints: int
    num_classes: int
    max_frames: int

    def __post_init__(self):
        if self.num_keypoints != NUM_KEYPOINTS:
            raise ValueError(f"'num_keypoints' expected {NUM_KEYPOINTS} (this suite's layout), received {self.num_keypoints}")
        if self.num_classes < 1 or not 1 <= self.max_frames <= MAX_KEYPOINT_FRAMES:
            raise ValueError(f"'num_classes' expected >= 1 and 'max_frames' 1..{MAX_KEYPOINT_FRAMES}, received "
                             f"{self.num_classes} and {self.max_frames}")  # fmt: skip


def part_slices() -> dict[str, slice]:
    """``{part: slice of the K axis}``, e.g. ``points[:, part_slices()["left_hand"]]``."""
    out, start = {}, 0
    for name, n in PARTS:
        out[name] = slice(start, start + n)
        start += n
    return out


@dataclass(frozen=True)
class KeypointEntry(ClipEntry):
    """One clip of the store, as the manifest lists it: a clip store's entry plus the source frame size in px."""

    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class KeypointClip:
    """One clip's keypoints: ``points`` (T, K, 3) float16, ``present`` (T, 4) bool, ``frames`` (T,)."""

    points: np.ndarray
    present: np.ndarray
    frames: np.ndarray


class KeypointStore:
    """Read side of the keypoint store (the pose models use it), mirroring ``ClipStore``.

    Args:
        root: the store directory (``--out`` of ``main/extract_keypoints.py``).

    Raises:
        StoreError: not a finished keypoint store, or its labels disagree;
            the message names the file and the fix.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        missing = [n for n in ("store.json", "labels.txt", "manifest.csv") if not (self.root / n).is_file()]
        if missing:
            raise StoreError(
                f"no keypoint store at {self.root} (missing {', '.join(missing)}). Make it with: "
                f"python main/extract_keypoints.py --metadata raw/WLASL_v0.3.json --videos raw/videos --subset N --out {self.root}"
            )
        fix = "the store was edited, damaged or mixed with another one: extract it again"
        self.meta, self.labels, self.rows = read_store_files(
            self.root, KeypointStoreMeta, ("video_id", "gloss", "label", "split", "signer_id", "width", "height", "path"), fix)
        self.entries = []
        for k, r in enumerate(self.rows, start=2):
            try:
                label, signer, width, height = (int(r[c]) for c in ("label", "signer_id", "width", "height"))
            except (TypeError, ValueError):
                raise StoreError(
                    f"{self.root / 'manifest.csv'}: line {k} (video_id {r.get('video_id')}): label, signer_id, width "
                    f"and height expected integers, received {[r.get(c) for c in ('label', 'signer_id', 'width', 'height')]}; {fix}"
                ) from None
            self.entries.append(
                KeypointEntry(
                    video_id=r["video_id"], label=label, gloss=r["gloss"], split=r["split"],
                    path=self.root / r["path"], signer_id=signer, width=width, height=height,
                )
            )

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def num_keypoints(self) -> int:
        return NUM_KEYPOINTS

    @property
    def max_frames(self) -> int:
        return int(self.meta["max_frames"])

    def split(self, name: str) -> list[KeypointEntry]:
        """The clips of one split (``train``, ``val`` or ``test``), in manifest order."""
        return [e for e in self.entries if e.split == name]

    def load(self, entry: KeypointEntry | str | Path) -> KeypointClip:
        """One clip's arrays, checked against the layout (a wrong file raises, naming it)."""
        path = entry.path if isinstance(entry, KeypointEntry) else Path(entry)
        rerun = delete_advice(path, self.root, "rerun the extraction (finished clips are kept)")
        try:  # headers checked before any array is read: a damaged one cannot claim 10^9 frames
            z = read_npz(path, ("points", "present", "frames"), expected="a clip's keypoints", todo=rerun)
        except (DamagedFile, FileNotFoundError) as e:
            raise StoreError(f"cannot read the keypoints: {e}" if isinstance(e, DamagedFile) else f"{e}; {rerun}") from None
        clip = KeypointClip(z["points"], z["present"], z["frames"])
        t = clip.points.shape[0] if clip.points.ndim else 0
        ok = (
            clip.points.dtype == np.float16 and clip.points.shape == (t, NUM_KEYPOINTS, 3)
            and clip.present.dtype == np.bool_ and clip.present.shape == (t, len(PARTS))
            and clip.frames.shape == (t,) and 1 <= t <= self.max_frames
        )
        if not ok:
            raise StoreError(
                f"{path}: expected points float16 (T, {NUM_KEYPOINTS}, 3), present bool (T, {len(PARTS)}), "
                f"frames (T,) with 1 <= T <= {self.max_frames}, received {clip.points.dtype} {clip.points.shape}, "
                f"{clip.present.dtype} {clip.present.shape}, {clip.frames.shape}; {rerun}"
            )
        return clip

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        counts = {s: len(self.split(s)) for s in ("train", "val", "test")}
        return f"KeypointStore({str(self.root)!r}, classes={self.num_classes}, K={NUM_KEYPOINTS}, {counts})"
