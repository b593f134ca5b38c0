"""TensorBoard event files without TensorFlow: the record format, reading back, and the events the suite writes.

An event file is a sequence of records (little-endian uint64 length, its
masked CRC-32C, the bytes, their masked CRC-32C), each a serialized
``tensorboard.Event`` protobuf, the first one naming the file version.
TensorBoard reads every file of a folder whose name contains ``tfevents``, in
name order. The protobuf classes and the CRC come with the ``tensorboard``
package, which imports no TensorFlow for them: a PyTorch run pays ~0.2 s once,
not a TensorFlow import.

The events (TensorBoard's documented summary formats):

- :func:`scalar`: a ``simple_value`` (the scalars plugin);
- :func:`image`: an encoded PNG (the images plugin);
- :func:`session_start`, :func:`session_end`, :func:`experiment`: the HParams
  plugin's ``HParamsPluginData`` (one session per run folder; the experiment
  names the hyperparameter and metric columns).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

from utils.core.files import atomic_write_bytes

__all__ = [
    "HPARAM_TYPES",
    "STATUSES",
    "EventFile",
    "Event",
    "encode",
    "event_file_name",
    "event_files",
    "experiment",
    "image",
    "read_events",
    "remove_pending",
    "restart",
    "scalar",
    "session_end",
    "session_start",
    "write_file",
]

Event = event_pb2.Event
FILE_VERSION = "brain.Event:2"
_MARK = "tfevents"  # what TensorBoard looks for in a file name
_PREFIX = f"events.out.{_MARK}."
HPARAM_TYPES = {"number": api_pb2.DATA_TYPE_FLOAT64, "string": api_pb2.DATA_TYPE_STRING, "bool": api_pb2.DATA_TYPE_BOOL}
STATUSES = {"success": api_pb2.STATUS_SUCCESS, "failure": api_pb2.STATUS_FAILURE, "running": api_pb2.STATUS_RUNNING}


def _record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


def encode(events) -> bytes:
    """The records of ``events``, ready to append to an event file."""
    return b"".join(_record(e.SerializeToString()) for e in events)


def read_events(path: str | Path) -> list[Event]:
    """The events of one file, in order, without its file-version header.

    A damaged or truncated tail (the writer was killed mid-record) ends the
    list: what comes before it is whole, as the CRCs show.
    """
    data = Path(path).read_bytes()
    out, pos = [], 0
    while pos + 12 <= len(data):
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        end = pos + 12 + length + 4
        if end > len(data) or struct.unpack("<I", data[pos + 8 : pos + 12])[0] != masked_crc32c(header):
            break
        body = data[pos + 12 : pos + 12 + length]
        if struct.unpack("<I", data[end - 4 : end])[0] != masked_crc32c(body):
            break
        event = Event.FromString(body)
        if not event.HasField("file_version"):
            out.append(event)
        pos = end
    return out


def event_files(folder: str | Path) -> list[Path]:
    """The event files of ``folder`` in the order TensorBoard reads them (by name)."""
    folder = Path(folder)
    return sorted(p for p in folder.glob(f"*{_MARK}*") if p.is_file() and not p.name.startswith(".")) if folder.is_dir() else []


def event_file_name(folder: str | Path) -> str:
    """A new file name that sorts after every event file in ``folder`` (whatever this node's clock says).

    ``events.out.tfevents.<seconds>.<host>.<pid>``, TensorBoard's own pattern;
    the seconds are raised past the newest existing file's, so a requeued job
    on a node whose clock lags still appends after the files before it.
    """
    seconds = int(time.time())
    for path in event_files(folder):
        stamp = path.name[len(_PREFIX) :].split(".", 1)[0]
        if path.name.startswith(_PREFIX) and stamp.isdigit():
            seconds = max(seconds, int(stamp) + 1)
    host = "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname())[:40] or "host"
    return f"{_PREFIX}{seconds:010d}.{host}.{os.getpid()}"


def write_file(path: str | Path, events) -> None:
    """A whole event file (the version header, then ``events``), atomically and fsynced.

    Written under a hidden name without ``tfevents`` first, so TensorBoard
    never reads it half-written, then renamed into place.
    """
    path = Path(path)
    pending = path.parent / f".pending-{os.getpid()}"
    header = Event(wall_time=time.time(), file_version=FILE_VERSION)
    atomic_write_bytes(pending, encode([header, *events]), fsync=True)
    os.replace(pending, path)


def remove_pending(folder: str | Path) -> None:
    """Delete what a killed :func:`write_file` left (call while holding the folder, e.g. under the run lock)."""
    for path in Path(folder).glob(".pending-*"):
        path.unlink(missing_ok=True)


class EventFile:
    """One event file, appended to and flushed after every write, so TensorBoard sees each point as it comes.

    Args:
        path: the file; created with the file-version header when missing.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        new = not self.path.exists()
        self._f = self.path.open("ab")
        if new:
            self.write([Event(wall_time=time.time(), file_version=FILE_VERSION)])

    def write(self, events) -> None:
        self._f.write(encode(events))
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def restart(wall_time: float | None = None) -> Event:
    """A ``SessionLog.START`` at step 0: "what follows replaces everything before it in this folder".

    TensorBoard's Python loader (``--load_fast=false``) ignores a folder's
    first START and, at a later one, drops every point it holds with a step
    >= the START's: at step 0, all of them. A server that was already
    showing the folder then serves the rewritten file instead of both.
    """
    return Event(wall_time=wall_time or time.time(), step=0, session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START))


def scalar(tag: str, value: float, step: int, wall_time: float | None = None) -> Event:
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))])
    return Event(wall_time=wall_time or time.time(), step=int(step), summary=summary)


def image(tag: str, png: bytes, step: int, wall_time: float | None = None) -> Event:
    """A PNG as the images plugin reads it (its size from the PNG header).

    Raises:
        ValueError: ``png`` is not a PNG.
    """
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError(f"image {tag!r}: expected PNG bytes, received {png[:16]!r}...")
    width, height = struct.unpack(">II", png[16:24])
    img = summary_pb2.Summary.Image(height=height, width=width, encoded_image_string=png)
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=img)])
    return Event(wall_time=wall_time or time.time(), step=int(step), summary=summary)


def _hparams_event(tag: str, data: plugin_data_pb2.HParamsPluginData, wall_time: float, step: int = 0) -> Event:
    value = summary_pb2.Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR)
    return Event(wall_time=wall_time, step=step, summary=summary_pb2.Summary(value=[value]))


def session_start(hparams: dict, *, start_time: float, group: str = "") -> Event:
    """The HParams plugin's session start: this run folder's hyperparameter values (bool, number or text)."""
    info = plugin_data_pb2.SessionStartInfo(start_time_secs=start_time, group_name=group)
    for name, value in hparams.items():
        if isinstance(value, bool):
            info.hparams[name].bool_value = value
        elif isinstance(value, (int, float)):
            info.hparams[name].number_value = float(value)
        else:
            info.hparams[name].string_value = str(value)
    data = plugin_data_pb2.HParamsPluginData(session_start_info=info)
    return _hparams_event(metadata.SESSION_START_INFO_TAG, data, start_time)


def session_end(status: str, *, end_time: float, step: int = 0) -> Event:
    """The HParams plugin's session end: ``success`` or ``failure`` (a key of :data:`STATUSES`)."""
    info = plugin_data_pb2.SessionEndInfo(status=STATUSES[status], end_time_secs=end_time)
    return _hparams_event(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=info), end_time, step)


def experiment(hparams: dict[str, str], metrics: dict[str, str], *, wall_time: float | None = None) -> Event:
    """The HParams plugin's experiment: its columns.

    Args:
        hparams: name -> ``number``, ``string`` or ``bool``. No domains: a
            domain would make TensorBoard's table filter out runs whose value
            lies outside it (runs of other studies under one ``--logdir``).
        metrics: scalar tag (in each session's own folder) -> display name.
    """
    exp = api_pb2.Experiment(
        time_created_secs=wall_time or time.time(),
        hparam_infos=[api_pb2.HParamInfo(name=n, type=HPARAM_TYPES[t]) for n, t in hparams.items()],
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=label) for tag, label in metrics.items()],
    )
    return _hparams_event(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=exp), exp.time_created_secs)
