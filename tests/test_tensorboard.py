"""TensorBoard reads what the runs write: the real ``tensorboard`` server, queried through its HTTP data API.

Under one ``results/`` folder: a finished PyTorch run, a run stopped with
SIGUSR1 and resumed, a run killed with SIGKILL after writing an epoch it had
not checkpointed and rerun, a Keras dry run with ``--tensorboard``, and a
3-trial tuning study. Two servers read them: one over ``results/`` with the
Python loader (``--load_fast=false``, which serves a step written twice
twice), already showing the stopped and the killed run when they restart,
and one over the study alone with the default Rust data server. Training
uses the tests' tiny PyTorch family (and a tiny Conv3D on the Keras side):
the events do not depend on the network.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")
torch = pytest.importorskip("torch")

from models.tensorboard_run import EPOCH_TAGS, HEARTBEAT_TAGS, METRICS, _kept  # noqa: E402
from tests.torch_helpers import make_store, toy_family  # noqa: E402
from utils.core import tb_events  # noqa: E402
from utils.core.preempt import REQUEUE_EXIT_CODE  # noqa: E402
from utils.core.records import read_history, read_record  # noqa: E402
from utils.train_cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TENSORBOARD = Path(sys.executable).with_name("tensorboard")
EPOCHS, STEPS = 4, 3  # per run: epochs x train steps per epoch
STUDY = "toy-tb-study"
# A training subprocess of the tiny family with a heartbeat at every step (HEARTBEAT_S = 0); with
# KILL_AFTER_EPOCH=E it SIGKILLs itself right after epoch E's TensorBoard points, before that epoch's
# checkpoint: the points of a node that died mid-epoch, which a rerun must not keep twice. On exit it
# says whether TensorFlow was imported (a PyTorch run's events must not cost a TensorFlow import).
CHILD = """
import atexit, os, runpy, signal, sys
sys.path.insert(0, {root!r})
atexit.register(lambda: print("tensorflow imported:", "tensorflow" in sys.modules, flush=True))
import models.lifecycle, models.tensorboard_run as tbr
models.lifecycle.HEARTBEAT_S = 0.0
kill = int(os.environ.get("KILL_AFTER_EPOCH", 0))
if kill:
    write = tbr.RunBoard.epoch
    def epoch(self, row):
        write(self, row)
        if int(row["epoch"]) == kill:
            os.kill(os.getpid(), signal.SIGKILL)
    tbr.RunBoard.epoch = epoch
sys.argv = ["toy_train.py", *sys.argv[1:]]
runpy.run_path({toy!r}, run_name="__main__")
""".format(root=str(ROOT), toy=str(ROOT / "tests" / "toy_train.py"))


def _argv(store, results, run_id, *extra):
    return ["--variant", "small", "--data", str(store), "--frames", "8", "--size", "32", "--results", str(results),
            "--run-id", run_id, "--workers", "0", "--batch-size", "2", "--dropout", "0",
            "--config", str(store.parent / "short.yaml"), *extra]  # fmt: skip


def _child(store, results, run_id, *extra, kill_after=0):
    env = {**os.environ, "KILL_AFTER_EPOCH": str(kill_after), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", CHILD, *_argv(store, results, run_id, "--epochs", str(EPOCHS), *extra)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


# TensorBoard's own line once it listens: "TensorBoard 2.20.0 at http://127.0.0.1:53217/ (Press CTRL+C to quit)".
_LISTENING = re.compile(r"TensorBoard \S+ at http://127\.0\.0\.1:(\d+)/")


class Board:
    """A running ``tensorboard`` process and its HTTP data API."""

    def __init__(self, logdir: Path, *extra: str):
        # Port 0: the server binds a port the system picks, and says which. A port picked here and
        # handed over could be taken in between (CI saw "could not bind to port 45441, it was
        # already in use" with 7 tests erroring at setup).
        self.log = logdir.parent / f"tensorboard-{time.time_ns()}.log"
        cmd = [str(TENSORBOARD), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", "0",
               "--reload_interval", "1", *extra]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        self._url: str | None = None

    @property
    def url(self) -> str:
        """The server's address, from its own line in the log; ConnectionRefusedError (an OSError) until it listens."""
        if self._url is None:
            found = _LISTENING.search(self.log.read_text(errors="replace"))
            if found is None:
                raise ConnectionRefusedError(f"tensorboard has not said its port yet ({self.log})")
            self._url = f"http://127.0.0.1:{found.group(1)}"
        return self._url

    def get(self, path: str, **query):
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        with urllib.request.urlopen(url, timeout=30) as r:
            body = r.read()
        return json.loads(body) if r.headers.get_content_type() == "application/json" else body

    def post(self, path: str, payload: dict):
        req = urllib.request.Request(f"{self.url}{path}", data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def wait(self, ready, deadline_s: float = 120.0):
        """Poll until ``ready(self)`` is true (the server starts, then loads the files in the background)."""
        end = time.time() + deadline_s
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"tensorboard exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            try:
                if ready(self):
                    return
            except OSError:
                pass  # not listening yet
            if time.time() > end:
                raise AssertionError(f"tensorboard at {self._url or 'a port not said yet'} not ready in {deadline_s} s: {self.log.read_text()[-2000:]}")
            time.sleep(0.5)

    def scalars(self, run: str, tag: str) -> list[tuple[int, float]]:
        return [(step, value) for _, step, value in self.get("/data/plugin/scalars/scalars", run=run, tag=tag)]

    def session_groups(self) -> list[dict]:
        statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
        request = {"experimentName": "", "allowedStatuses": statuses, "colParams": [], "startIndex": 0, "sliceSize": 1000}
        return self.post("/data/plugin/hparams/session_groups", request).get("sessionGroups", [])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def toy():
    with toy_family() as names:
        yield names


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("tb_store")
    (root / "short.yaml").write_text(f"train: {{steps_per_epoch: {STEPS}}}\n")
    return make_store(root)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """TensorBoard over results/ (Python loader) and over the study alone (default loader).

    Started before anything is written: a server takes ~8 s of CPU to start (it imports
    TensorFlow), which the training below overlaps, and it picks up folders as they appear.
    """
    root = tmp_path_factory.mktemp("tb") / "results"
    (root / "tuning" / STUDY).mkdir(parents=True)
    every, study = Board(root, "--load_fast=false"), Board(root / "tuning" / STUDY)
    yield root, every, study
    every.stop()
    study.stop()


@pytest.fixture(scope="module")
def results(servers, store, toy):
    """Every run and the study under one results/ folder, with the outcome of each start."""
    results = servers[0]
    out = {"results": results}
    # Two training subprocesses at once (2 cores): one stopped by SIGUSR1, one that kills itself.
    cut, crash = _child(store, results, "cut"), _child(store, results, "crash", kill_after=2)
    try:
        deadline = time.time() + 120
        while not (results / "runs" / "cut" / "history.csv").is_file() and cut.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        cut.send_signal(signal.SIGUSR1)  # lands in epoch 2 or later
        out["cut"] = [cut.communicate(timeout=120)[0]]
        out["crash"] = [crash.communicate(timeout=120)[0]]
    finally:
        cut.kill()
        crash.kill()
    out["codes"] = {"cut": cut.returncode, "crash": crash.returncode}
    out["stopped_at"] = json.loads((results / "runs" / "cut" / "checkpoints" / "state.json").read_text())["checkpoints"][0]
    out["crash_files"] = len(tb_events.event_files(results / "runs" / "crash" / "tb"))
    # In-process runs meanwhile (the server starts on the other core).
    with pytest.MonkeyPatch.context() as mp:
        import models.lifecycle

        mp.setattr(models.lifecycle, "HEARTBEAT_S", 0.0)
        out["codes"]["plain"] = main("toy", _argv(store, results, "plain", "--epochs", str(EPOCHS)))
    # The Keras engine: a dry run asked for event files.
    from tests.test_tuning_engines import KERAS_FAMILY, _register_keras_model

    _register_keras_model()
    keras = ["--data", str(store), "--frames", "4", "--size", "32", "--results", str(results), "--workers", "0",
             "--batch-size", "2", "--dry-run", "--run-id", "keras", "--tensorboard"]  # fmt: skip
    out["codes"]["keras"] = main(KERAS_FAMILY, keras)

    from utils.tuning.cli import main as tune

    space = store.parent / "space.yaml"
    space.write_text("batch_size: 2\noptimizer: [adam, sgd]\n")
    argv = ["--tuner", "bayesian", "--max-trials", "3", "--max-epochs", "2", "--study", STUDY, "--space", str(space),
            "--variant", "small", "--data", str(store), "--frames", "8", "--size", "32", "--results", str(results),
            "--workers", "0", "--config", str(store.parent / "short.yaml")]  # fmt: skip
    out["codes"]["study"] = tune("toy", argv)

    # The server shows both runs as the killed processes left them (the crash run's unsaved epoch 2
    # included) before they restart: what it serves afterwards must have replaced those points.
    every = servers[1]
    every.wait(lambda b: len(b.scalars("runs/crash/tb", "epoch/val_loss")) == 2 and b.scalars("runs/cut/tb", "epoch/val_loss"))
    reruns = {name: _child(store, results, name) for name in ("cut", "crash")}
    for name, proc in reruns.items():
        out[name].append(proc.communicate(timeout=120)[0])
        out["codes"][name + "_rerun"] = proc.returncode
    return out


@pytest.fixture(scope="module")
def boards(servers, results):
    """Both servers, once they serve every finished run (they load files in the background)."""
    _, every, study = servers

    def finished(board, expected):
        groups = board.session_groups()
        return len(groups) == expected and all(g["sessions"][0].get("status") == "STATUS_SUCCESS" for g in groups)

    every.wait(lambda b: finished(b, 7))
    study.wait(lambda b: finished(b, 3))
    return {"every": every, "study": study}


def _history(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    rows = read_history(run_dir)
    return {tag: [(int(r["epoch"]), float(r[col])) for r in rows] for col, tag in EPOCH_TAGS.items()}


def _assert_curves(board: Board, run_dir: Path, run: str) -> None:
    """One point per epoch, in order, equal to history.csv; heartbeats at every training step once, in order."""
    tags = board.get("/data/plugin/scalars/tags")[run]
    assert set(EPOCH_TAGS.values()) | set(HEARTBEAT_TAGS.values()) <= set(tags), sorted(tags)
    for tag, expected in _history(run_dir).items():
        served = board.scalars(run, tag)
        assert [s for s, _ in served] == list(range(1, EPOCHS + 1)), (run, tag, served)
        assert [v for _, v in served] == pytest.approx([v for _, v in expected], rel=1e-5, abs=1e-6), (run, tag)  # csv: 6 decimals
    for tag in HEARTBEAT_TAGS.values():
        assert [s for s, _ in board.scalars(run, tag)] == list(range(1, EPOCHS * STEPS + 1)), (run, tag)


@pytest.mark.slow
def test_the_runs_and_the_study_completed(results):
    codes = results["codes"]
    assert codes["cut"] == REQUEUE_EXIT_CODE, results["cut"][0]
    assert codes["crash"] == -signal.SIGKILL, results["crash"][0]
    assert codes["cut_rerun"] == codes["crash_rerun"] == 0, results["cut"][1] + results["crash"][1]
    assert {k: codes[k] for k in ("plain", "keras", "study")} == dict.fromkeys(("plain", "keras", "study"), 0)
    # SIGUSR1 stopped the run inside it (a mid-epoch checkpoint or an epoch boundary), not after it.
    assert 1 <= results["stopped_at"]["epoch"] < EPOCHS
    assert "resuming cut from epoch" in results["cut"][1] and "resuming crash from epoch 2, step 0" in results["crash"][1]
    assert "tensorflow imported: False" in results["cut"][1]


@pytest.mark.slow
def test_a_finished_run_serves_its_curves_final_metrics_and_images(results, boards):
    board, run_dir = boards["every"], results["results"] / "runs" / "plain"
    _assert_curves(board, run_dir, "runs/plain/tb")
    record = read_record(run_dir / "metrics.json")
    for split in ("val", "test"):
        for metric in ("top1", "top5", "loss"):
            served = board.scalars("runs/plain/tb", f"final/{split}_{metric}")
            assert served == [(EPOCHS, pytest.approx(record.metrics[split][metric], rel=1e-5))]
    images = board.get("/data/plugin/images/tags")["runs/plain/tb"]
    assert set(images) == {"images/val_confusion", "images/val_per_class_top1", "images/test_confusion", "images/test_per_class_top1"}
    shown = board.get("/data/plugin/images/images", run="runs/plain/tb", tag="images/test_confusion", sample=0)
    assert [i["step"] for i in shown] == [EPOCHS]
    png = board.get("/data/plugin/images/individualImage?" + shown[0]["query"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


@pytest.mark.slow
def test_a_run_stopped_by_sigusr1_and_resumed_continues_the_same_curves(results, boards):
    _assert_curves(boards["every"], results["results"] / "runs" / "cut", "runs/cut/tb")
    assert read_record(results["results"] / "runs" / "cut" / "metrics.json").status == "completed"


@pytest.mark.slow
def test_points_a_killed_run_wrote_past_its_checkpoint_are_not_kept_twice(results, boards):
    run_dir = results["results"] / "runs" / "crash"
    assert results["crash_files"] == 1  # the killed process left its file, with epoch 2 not checkpointed
    _assert_curves(boards["every"], run_dir, "runs/crash/tb")
    # In the files themselves (what any reader gets): one file, every tag's steps strictly increasing.
    files = tb_events.event_files(run_dir / "tb")
    assert len(files) == 1
    steps: dict[str, list[int]] = {}
    for event in tb_events.read_events(files[0]):
        for value in event.summary.value:
            steps.setdefault(value.tag, []).append(event.step)
    for tag, seen in steps.items():
        assert seen == sorted(set(seen)), (tag, seen)


@pytest.mark.slow
def test_the_keras_engine_writes_the_same_tags(results, boards):
    tags = boards["every"].get("/data/plugin/scalars/tags")["runs/keras/tb"]
    assert set(EPOCH_TAGS.values()) | {"final/test_top1"} <= set(tags)
    assert [s for s, _ in boards["every"].scalars("runs/keras/tb", "epoch/val_top1")] == [1]


@pytest.mark.slow
def test_a_three_trial_study_is_one_hparams_table(results, boards):
    board = boards["study"]  # --logdir results/tuning/<study>
    experiment = board.post("/data/plugin/hparams/experiment", {"experimentName": ""})
    columns = {h["name"] for h in experiment["hparamInfos"]}
    assert {"train.lr", "train.optimizer", "model.dropout", "data.batch_size", "model.name", "train.epochs", "study", "trial"} <= columns
    assert "tensorboard" not in columns and "run_id" not in columns  # not result-shaping
    assert [m["name"]["tag"] for m in experiment["metricInfos"]] == list(METRICS)
    groups = board.session_groups()
    assert len(groups) == 3
    root = results["results"] / "tuning" / STUDY
    for group in groups:
        (session,) = group["sessions"]
        run_id = session["name"].split("/")[1]
        record = read_record(root / "runs" / run_id / "metrics.json")
        hp = group["hparams"]
        assert hp["trial"] == record.tags["trial"] and hp["study"] == STUDY
        assert hp["train.lr"] == pytest.approx(record.config["train"]["lr"])
        assert hp["train.optimizer"] == record.config["train"]["optimizer"] and hp["train.epochs"] == record.epochs == 2
        assert session["status"] == "STATUS_SUCCESS"
        metrics = {m["name"]["tag"]: m["value"] for m in session["metricValues"]}
        assert metrics["final/val_top1"] == pytest.approx(record.metrics["val"]["top1"], rel=1e-5)
        assert metrics["final/test_loss"] == pytest.approx(record.metrics["test"]["loss"], rel=1e-5)
        assert metrics["epoch/val_top1"] == pytest.approx(float(read_history(root / "runs" / run_id)[-1]["val_top1"]), rel=1e-5)


@pytest.mark.slow
def test_logdir_results_shows_every_run_and_trial_in_one_table(results, boards):
    groups = boards["every"].session_groups()
    names = sorted(g["sessions"][0]["name"] for g in groups)
    assert names == sorted(["runs/plain/tb", "runs/cut/tb", "runs/crash/tb", "runs/keras/tb"]
                           + [f"tuning/{STUDY}/runs/{STUDY}-trial{i}/tb" for i in range(3)])  # fmt: skip
    for g in groups:
        assert math.isfinite({m["name"]["tag"]: m["value"] for m in g["sessions"][0]["metricValues"]}["final/test_top1"])


def test_a_restart_keeps_each_tags_points_up_to_its_checkpoint_once(tmp_path):
    """The rule itself, on files a killed restart can leave: a repeat across files and a torn last record."""
    first, second = tmp_path / "events.out.tfevents.1.a", tmp_path / "events.out.tfevents.2.b"
    first.write_bytes(tb_events.encode([tb_events.scalar("epoch/val_loss", 10 + e, e) for e in (1, 2, 3)]
                                       + [tb_events.scalar("heartbeat/train_loss", s, s) for s in range(1, 9)]
                                       + [tb_events.scalar("final/test_top1", 0.5, 3)]))  # fmt: skip
    torn = tb_events.encode([tb_events.scalar("epoch/val_loss", 99.0, 4)])
    second.write_bytes(tb_events.encode([tb_events.scalar("epoch/val_loss", 20 + e, e) for e in (2, 3)]) + torn[:-3])
    assert [(e.summary.value[0].simple_value, e.step) for e in tb_events.read_events(second)] == [(22.0, 2), (23.0, 3)]
    kept = _kept([first, second], keep_epochs=2, keep_steps=6)
    points = [(e.summary.value[0].tag, e.step, e.summary.value[0].simple_value) for e in kept]
    assert [p for p in points if p[0] == "epoch/val_loss"] == [("epoch/val_loss", 1, 11.0), ("epoch/val_loss", 2, 22.0)]
    assert [p[1] for p in points if p[0] == "heartbeat/train_loss"] == list(range(1, 7))
    assert not [p for p in points if p[0].startswith("final/")]  # written again when the run finishes


def test_dry_runs_and_no_tensorboard_write_none_and_switching_it_never_blocks_a_resume(store, toy, tmp_path):
    assert main("toy", _argv(store, tmp_path, "dry", "--dry-run")) == 0
    assert (tmp_path / "runs" / "dry" / "metrics.json").is_file() and not (tmp_path / "runs" / "dry" / "tb").exists()
    assert main("toy", _argv(store, tmp_path, "quiet", "--epochs", "1", "--no-tensorboard")) == 0
    run_dir = tmp_path / "runs" / "quiet"
    assert not (run_dir / "tb").exists() and read_record(run_dir / "metrics.json").config["tensorboard"] is False
    # Not a result-shaping setting: the same run resumes for a second epoch with the event files on.
    assert main("toy", _argv(store, tmp_path, "quiet", "--epochs", "2", "--tensorboard")) == 0
    (events,) = tb_events.event_files(run_dir / "tb")
    steps = [e.step for e in tb_events.read_events(events) for v in e.summary.value if v.tag == "epoch/val_top1"]
    assert steps == [2]
