"""Issue 24 (hardened, round 3): the surfaces added since round 2, tried as a hostile user and a broken disk would.

One harness: every case of the issue's table (findings f01-f20) and its minor items (m1-m6) that could be
rebuilt, each a test named after its finding. A case passes when the suite answers as it must: a clear
error (exit 2, one ``error:`` line that names the file or option, with no traceback), a recorded skip, or
the right result. A case that fails says which kind of failure it is, as the issue counts them:

    traceback   an exception reached the user (or the test)
    silent      exit 0 with wrong or lost data
    unclear     refused, but the message names no file / option, or gives dangerous advice
    memory      a memory or time bomb (the case runs in a child process with 4 GiB and a time limit)

Tiny synthetic stores throughout; a stand-in ``sbatch`` where a cluster is needed. The same file run
against the base commit (``f4c3501``) measured the failures before the fixes (issue 24's "measured by"):
85 of its 93 cases failed there. The 8 that held are kept as guards: f01 on a clip store (its report
already said ``complete: false``; the finding stands for keypoint stores, whose report the planner never
read), and four f02 values, two f09 names and one f10 box that were already refused there.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from export_helpers import toy_run_with_onnx

REPO = Path(__file__).resolve().parents[1]


# -- running a command as a user would, and judging its answer --------------------------------------------


@dataclass
class Answer:
    rc: int | None
    out: str
    err: str
    exc: BaseException | None = None


def call(capsys, main, *argv) -> Answer:
    """``main(argv)`` in this process, as its script would run it: an exception that escapes is a traceback."""
    capsys.readouterr()
    argv = argv[0] if len(argv) == 1 and isinstance(argv[0], list) else argv
    try:
        rc = main(list(map(str, argv)))
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 2
    except Exception as e:  # noqa: BLE001 - what the user would see as a traceback
        out, err = capsys.readouterr()
        return Answer(None, out, err, e)
    out, err = capsys.readouterr()
    return Answer(rc, out, err)


def _limit():
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def guarded(code: str, timeout: float = 90) -> Answer:
    """Python ``code`` in a child process with 4 GiB of address space and a time limit (memory and time bombs)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=timeout, preexec_fn=_limit)  # fmt: skip
    except subprocess.TimeoutExpired:
        return Answer(None, "", f"memory: no answer within {timeout:.0f} s")
    return Answer(r.returncode, r.stdout, r.stderr)


def refused(a: Answer, *names: str, not_in: tuple[str, ...] = ()) -> str:
    """Assert a clear refusal: exit 2, an ``error:`` line naming each of ``names``, no traceback; returns stderr."""
    if a.exc is not None or "Traceback" in a.err:
        raise AssertionError(f"traceback: {type(a.exc).__name__ if a.exc else ''} {a.exc or a.err[-600:]}")
    if a.rc is None or a.rc < 0 or "memory" in a.err[:7]:
        raise AssertionError(f"memory: {a.err[-300:]}")
    if a.rc == 0:
        raise AssertionError(f"silent: exit 0 (out: {a.out[-300:]!r})")
    lines = [line for line in a.err.splitlines() if line.startswith("error:")]
    missing = [n for n in names if n not in a.err]
    bad = [n for n in not_in if n in a.err]
    if a.rc != 2 or not lines or missing or bad:
        raise AssertionError(f"unclear: exit {a.rc}, missing {missing}, unwanted {bad}: {a.err[-600:]!r}")
    return a.err


# -- shared inputs: a tiny store, a finished run of the tests' toy model, its ONNX export -------------------


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    with toy_run_with_onnx(tmp_path_factory.mktemp("hardening3")) as made:
        yield made


def copy_run(toy, tmp_path, name="run") -> Path:
    run = tmp_path / "results" / "runs" / name
    shutil.copytree(toy["run"], run)
    return run


def copy_store(toy, tmp_path, name="store") -> Path:
    out = tmp_path / name
    shutil.copytree(toy["store"], out)
    return out


def a_video(toy) -> Path:
    return next(iter(sorted(toy["videos"].glob("*.mp4"))))


def experiment(tmp_path, **changes) -> Path:
    """An experiment file of one x3d_xs run on an existing store (not made: a dry run warns), with ``changes``."""
    data = {"name": "h3", "results": str(tmp_path / "res"), "profile": "slurm/local.toml",
            "stores": {"s": {"out": str(tmp_path / "store")}},
            "runs": [{"models": ["x3d_xs"], "store": "s", "seeds": 1, "options": {"epochs": 1}}]}  # fmt: skip
    for key, value in changes.items():
        node, *path = key.split(".")
        target = data
        for part in [node, *path][:-1]:
            target = target[int(part)] if isinstance(target, list) else target[part]
        last = [node, *path][-1]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    path = tmp_path / "exp.yaml"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture()
def exp_main(monkeypatch):
    from main.experiment import main

    monkeypatch.chdir(REPO)  # main() moves to the repo root, as the job does; put the test back afterwards
    return main


def train_main(argv):
    from utils.train_cli import main

    return main("toy", ["--variant", "small", *argv])


def steps_preset(tmp_path: Path, steps: int) -> Path:
    """A preset of ``steps`` steps per epoch (the training scripts take it from a preset only)."""
    path = tmp_path / f"steps{steps}.yaml"
    path.write_text(f"train: {{steps_per_epoch: {steps}}}\n")
    return path


def export_main(argv):
    from main.export import main

    return main(argv)


def predict_main(argv):
    from main.predict import main

    return main(argv)


def ensemble_main(argv):
    from main.ensemble import main

    return main(argv)


def report_main(argv):
    from utils.report import main

    return main(argv)


# ======================================================================= f01: a store that lost an instance


def _kill_on(inst):
    from wlasl.stage import Outcome

    if inst.video_id.endswith("3"):
        os.kill(os.getpid(), signal.SIGKILL)  # the OOM killer, mid-instance
    return Outcome(inst.video_id, "skipped", "missing", "no video (test)")


@pytest.mark.parametrize("kind", ["clips", "keypoints"])
def test_f01_a_store_that_lost_an_instance_is_not_complete_and_goes_again(kind, tmp_path):
    from utils.cluster.runner import gather, output_done, plan_actions
    from utils.cluster.status import plan_status
    from utils.experiment import experiment_from, make_plan
    from wlasl import keypoints, prepare
    from wlasl.metadata import Instance
    from wlasl.stage import open_out, run_stage

    stage = prepare.STAGE if kind == "clips" else keypoints.STAGE
    out = tmp_path / "store"
    open_out(out, stage)
    chosen = [Instance(video_id=f"{90000 + i}", gloss="g", label=0, split="train", signer_id=0, bbox=(0, 0, 8, 8),
                       frame_start=1, frame_end=-1, fps_nominal=25.0) for i in range(6)]  # fmt: skip
    report = run_stage(stage, out=out, chosen=chosen, work=_kill_on, workers=2, progress=False)
    assert report["lost"] == ["90003"], report["lost"]
    assert json.loads((out / stage.report).read_text())["complete"] is False, "silent: complete: true"
    # The keypoint store's report is keypoints_report.json: a planner that looked for prepare_report.json only
    # took its manifest for a finished store.
    assert not output_done("store:s", str(out)), "silent: the store counts as done"
    store = {"metadata": str(tmp_path / "m.json"), "videos": str(tmp_path), "out": str(out)}
    store.update({"frames": 8, "size": 32} if kind == "clips" else {"kind": "keypoints", "max_frames": 50})
    exp = experiment_from({"name": "f01", "results": str(tmp_path / "res"), "profile": "slurm/local.toml",
                           "stores": {"s": store},
                           "runs": [{"models": ["x3d_xs" if kind == "clips" else "pose_linear"], "store": "s"}]},
                          "f01.yaml")  # fmt: skip
    plan = make_plan(exp)
    facts = gather(plan, slurm_states=False)
    actions = {a.step: a.kind for a in plan_actions(plan, facts)}
    assert actions["prep-s"] == "submit", f"silent: the lost instance is never retried ({actions})"
    assert next(t for t in plan_status(plan, facts) if t.key == "store:s").state != "completed"


# ======================================================================= f02: wrong values fail run --dry-run


F02 = {
    "options-epoch-lr": ({"runs.0.options": {"epoch": 3, "lr": "fast"}}, [], "runs[0]"),
    "options-abbreviated": ({"runs.0.options": {"epoch": 3}}, [], "--epoch"),
    "set-epochs-abc": ({}, ["--set", "runs.*.options.epochs=abc"], "--epochs"),
    "seed-10e29": ({"runs.0.seeds": [10**29]}, [], "seeds"),
    "size-1e9": ({"runs.0.options": {"size": 10**9}}, [], "size"),
    "report-format-pdf": ({"report": {"formats": ["pdf"]}}, [], "formats"),
    "report-metric-bogus": ({"report": {"metrics": ["bogus"]}}, [], "metrics"),
    "report-split-train": ({"report": {"split": "train"}}, [], "split"),
    "store-frames-1e9": ({"stores.s": {"metadata": "m.json", "videos": "v", "frames": 10**9, "size": 32}}, [], "--frames"),
    "store-option-margin-text": ({"stores.s": {"metadata": "m.json", "videos": "v", "frames": 8, "size": 32,
                                               "options": {"margin": "wide"}}}, [], "--margin"),
    "ensemble-weights": ({"ensembles": [{"name": "e", "members": [{"model": "x3d_xs", "store": "s"}] * 2,
                                         "weights": "1,x"}]}, [], "--weights"),
    "export-format-framework": ({"exports": [{"name": "x", "run": {"model": "x3d_xs", "store": "s"},
                                              "format": "tflite"}]}, [], "--format"),
    "export-predict-bbox": ({"exports": [{"name": "x", "run": {"model": "x3d_xs", "store": "s"}, "format": "onnx",
                                          "predict": "v.mp4", "options": {"bbox": "1,2,3"}}]}, [], "--bbox"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(F02))
def test_f02_values_a_job_would_refuse_fail_the_dry_run(case, tmp_path, capsys, exp_main):
    changes, extra, named = F02[case]
    path = experiment(tmp_path, **changes)
    refused(call(capsys, exp_main, "run", path, "--dry-run", *extra), str(path), named)


# ======================================================================= f03: the runner's own keys


F03 = {
    "results": ({"runs.0.options": {"results": "X"}}, "results"),
    "data": ({"runs.0.options": {"data": "/etc"}}, "data"),
    "run_id-escape": ({"runs.0.options": {"run_id": "../../../x"}}, "run_id"),
    "run_id-other": ({"runs.0.options": {"run_id": "someone_elses"}}, "run_id"),
    "run-id-dashed": ({"runs.0.options": {"run-id": "x"}}, "run-id"),
    "tag-plan": ({"runs.0.options": {"tag": "plan=other"}}, "tag"),
    "seed": ({"runs.0.options": {"seed": 7}}, "seed"),
    "per_model-results": ({"runs.0.per_model": {"x3d_xs": {"results": "X"}}}, "results"),
    "store-out": ({"stores.s": {"metadata": "m.json", "videos": "v", "frames": 8, "size": 32,
                                "options": {"out": "/etc"}}}, "out"),
    "tuning-results": ({"tuning": [{"model": "x3d_xs", "store": "s", "tuner": "hyperband",
                                    "options": {"results": "X"}}]}, "results"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(F03))
def test_f03_options_cannot_override_the_runners_own_flags(case, tmp_path, capsys, exp_main):
    changes, key = F03[case]
    path = experiment(tmp_path, **changes)
    refused(call(capsys, exp_main, "run", path, "--dry-run"), str(path), key, "cannot be options")


# ======================================================================= f04: unbounded sizes


BOMB = "options: {" + ", ".join([f"x0: &a0 [{', '.join(['lol'] * 9)}]"]
                                + [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]) + "}"


def test_f04_seeds_count_is_bounded(tmp_path):
    path = experiment(tmp_path, **{"runs.0.seeds": 10**12})
    refused(guarded(f"import sys; from main.experiment import main; sys.exit(main(['run', '{path}', '--dry-run']))"),
            str(path), "seeds")  # fmt: skip


def test_f04_a_yaml_alias_bomb_is_refused_unexpanded(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(f"name: bomb\nresults: {tmp_path}/res\nstores: {{s: {{out: {tmp_path}/s}}}}\n"
                    f"runs:\n  - models: [x3d_xs]\n    store: s\n    {BOMB}\n")  # fmt: skip
    refused(guarded(f"import sys; from main.experiment import main; sys.exit(main(['run', '{path}', '--dry-run']))"),
            str(path), "aliases")  # fmt: skip


def test_f04_ensemble_grid_steps_are_bounded(tmp_path):
    from test_ensemble import make_member

    runs = [make_member(tmp_path, f"r{i}", "x3d_xs", seed=i) for i in range(3)]
    args = [*map(str, runs), "--out", str(tmp_path / "runs" / "ens"), "--grid-steps", "100000"]
    refused(guarded(f"import sys; from main.ensemble import main; sys.exit(main({args!r}))"), "--grid-steps")


def test_f04_a_keypoint_header_claiming_1e9_frames_is_refused_before_reading(tmp_path):
    from wlasl.synthetic_pose import make_synthetic_keypoints

    store = make_synthetic_keypoints(tmp_path / "kp", glosses=2, per_gloss=5)
    path = next((store / "keypoints").glob("*.npz"))
    with np.load(path) as z:
        arrays = dict(z)
    # The real header of a (10^9, K, 3) float16 array, then the bytes of the small one: a damaged file.
    with path.open("wb") as f, zipfile.ZipFile(f, "w") as zf:
        for key, value in arrays.items():
            with zf.open(f"{key}.npy", "w") as member:
                shape = (10**9, *value.shape[1:]) if key == "points" else value.shape
                np.lib.format.write_array_header_1_0(member, {"descr": np.lib.format.dtype_to_descr(value.dtype),
                                                              "fortran_order": False, "shape": shape})  # fmt: skip
                member.write(value.tobytes())
    code = (f"from wlasl.keypoint_store import KeypointStore; s = KeypointStore({str(store)!r})\n"
            f"e = [e for e in s.entries if e.path.name == {path.name!r}][0]\n"
            "try:\n    s.load(e)\nexcept ValueError as err:\n    print('error:', err, file=__import__('sys').stderr); raise SystemExit(2)")
    refused(guarded(code), path.name)


def test_f04_preprocess_frames_1e9_is_refused(tmp_path):
    from wlasl.synthetic import make_synthetic

    data = make_synthetic(tmp_path / "raw", glosses=2, per_gloss=2, broken=False)
    args = ["--metadata", str(data["metadata"]), "--videos", str(data["videos"]), "--out", str(tmp_path / "s"),
            "--frames", "1000000000", "--no-progress"]  # fmt: skip
    refused(guarded(f"import sys; from main.preprocess import main; sys.exit(main({args!r}))"), "--frames")
    assert not (tmp_path / "s").exists(), "silent: a half-made store"


# ======================================================================= f05: a results path with a space


def test_f05_a_results_path_with_a_space_runs(tmp_path, capsys, exp_main, monkeypatch):
    from test_experiment import fake_cluster

    path = experiment(tmp_path, results=str(tmp_path / "my results"))
    a = call(capsys, exp_main, "run", path, "--dry-run")
    assert a.rc == 0 and a.exc is None, f"unclear: refused ({a.err[-300:]})"
    assert "--output=" in a.out and "my results/logs" in a.out, a.out  # the log path on sbatch's line, quoted
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "manifest.csv").write_text("video_id\n")
    monkeypatch.setenv("PATH", f"{fake_cluster(tmp_path)}:{os.environ['PATH']}")
    a = call(capsys, exp_main, "run", path)
    assert a.rc == 0 and a.exc is None, f"unclear: {a.err[-400:]} {a.exc}"
    assert f"--output={tmp_path}/my results/logs/" in (tmp_path / "sbatch.log").read_text()
    assert (tmp_path / "my results" / "logs").is_dir()


# ======================================================================= f06: an output folder under a file


@pytest.fixture()
def a_file(tmp_path) -> Path:
    path = tmp_path / "plain.txt"
    path.write_text("a file, not a folder\n")
    return path


def test_f06_experiment_results_under_a_file(tmp_path, a_file, capsys, exp_main):
    path = experiment(tmp_path, results=str(a_file / "sub"))
    refused(call(capsys, exp_main, "run", path, "--dry-run"), str(a_file))


@pytest.mark.parametrize("option", ["--out", "--plots"])
def test_f06_report_outputs_under_a_file(option, toy, a_file, capsys):
    refused(call(capsys, report_main, "--results", toy["root"] / "results", option, a_file / "sub"), str(a_file))


def test_f06_ensemble_out_under_a_file(tmp_path, a_file, capsys):
    from test_ensemble import make_member

    runs = [make_member(tmp_path, f"r{i}", "x3d_xs", seed=i) for i in range(2)]
    refused(call(capsys, ensemble_main, [*map(str, runs), "--out", str(a_file / "ens")]), str(a_file))


def test_f06_training_results_under_a_file(toy, a_file, capsys):
    refused(call(capsys, train_main, "--data", toy["store"], "--results", a_file / "sub", "--dry-run", "--frames", "8",
                 "--size", "32"), str(a_file))  # fmt: skip


# ======================================================================= f07: damaged checkpoints and models


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(b"" if how == "empty" else data[: len(data) // 2])


def _best(run: Path) -> Path:
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    return run / "checkpoints" / state["checkpoints"][0]["best"]["files"][0]


@pytest.mark.parametrize("how", ["half", "empty"])
@pytest.mark.parametrize("tool", ["export", "predict"])
def test_f07_a_damaged_best_checkpoint_is_named(tool, how, toy, tmp_path, capsys):
    run = copy_run(toy, tmp_path)
    best = _best(run)
    _damage(best, how)
    if tool == "export":
        a = call(capsys, export_main, [str(run), "--format", "onnx", "--name", "again"])
    else:
        a = call(capsys, predict_main, [str(a_video(toy)), "--run", str(run)])
    refused(a, best.name)


def test_f07_a_cut_onnx_model_is_named(toy, tmp_path, capsys):
    run = copy_run(toy, tmp_path)
    _damage(run / "exports" / "onnx_float32" / "model.onnx", "half")
    refused(call(capsys, predict_main, [str(a_video(toy)), "--run", str(run), "--export", "onnx_float32"]),
            "model.onnx", "main/export.py")  # fmt: skip


# ======================================================================= f08: damaged config.json / contract.json


DAMAGED_JSON = {"cut": "{not json", "list": "[1, 2]", "no-keys": '{"input": {}}', "empty": ""}


@pytest.mark.parametrize("content", list(DAMAGED_JSON))
@pytest.mark.parametrize("tool", ["export", "predict"])
def test_f08_a_damaged_config_json_is_named(tool, content, toy, tmp_path, capsys):
    run = copy_run(toy, tmp_path)
    (run / "config.json").write_text(DAMAGED_JSON[content])
    if tool == "export":
        a = call(capsys, export_main, [str(run), "--format", "onnx", "--name", "again"])
    else:
        a = call(capsys, predict_main, [str(a_video(toy)), "--run", str(run)])
    refused(a, "config.json")


@pytest.mark.parametrize("content", list(DAMAGED_JSON))
def test_f08_a_damaged_contract_json_is_named(content, toy, tmp_path, capsys):
    run = copy_run(toy, tmp_path)
    (run / "exports" / "onnx_float32" / "contract.json").write_text(DAMAGED_JSON[content])
    refused(call(capsys, predict_main, [str(a_video(toy)), "--run", str(run), "--export", "onnx_float32"]),
            "contract.json")


# ======================================================================= f09, f10: export and predict options


@pytest.mark.parametrize("name", ["a\nb", "x" * 300, "../up", ".hidden"], ids=["newline", "300-chars", "up", "hidden"])
def test_f09_export_names_are_safe_folder_names(name, toy, tmp_path, capsys):
    run = copy_run(toy, tmp_path)
    refused(call(capsys, export_main, [str(run), "--format", "onnx", "--name", name]), "--name")
    assert sorted(p.name for p in (run / "exports").iterdir()) == ["onnx_float32"], "silent: a folder was made"


def test_f10_export_threads_are_checked_before_the_export_is_built(toy, tmp_path, capsys):
    run = copy_run(toy, tmp_path)
    refused(call(capsys, export_main, [str(run), "--format", "onnx", "--name", "t", "--threads", "-3"]), "--threads")
    assert not (run / "exports" / "t").exists()


@pytest.mark.parametrize("bbox", ["0,0,inf,10", "nan,0,10,10", "0,0,1e400,10", "-5,0,10,10"])
def test_f10_predict_bbox_must_be_finite_pixels(bbox, toy, capsys):
    refused(call(capsys, predict_main, [str(a_video(toy)), "--run", str(toy["run"]), f"--bbox={bbox}"]), "--bbox")


# ======================================================================= f11, f12: damaged or NaN ensemble scores


def _member_pair(tmp_path):
    from test_ensemble import make_member

    return [make_member(tmp_path, f"r{i}", "x3d_xs", seed=i) for i in range(2)]


def _write_npz_without(path: Path, key: str) -> None:
    with np.load(path) as z:
        arrays = {k: v for k, v in z.items() if k != key}
    np.savez(path, **arrays)


SCORE_DAMAGE = {
    "empty": lambda p: p.write_bytes(b""),
    "cut-zip": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "missing-key": lambda p: _write_npz_without(p, "logits"),
    "random-bytes": lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),
    "pickled-object": lambda p: np.savez(p, video_id=np.array([{"a": 1}], dtype=object), label=[0], logits=[[0.0]],
                                         glosses=["g"]),  # fmt: skip
}


@pytest.mark.parametrize("damage", list(SCORE_DAMAGE))
def test_f11_damaged_member_scores_are_named(damage, tmp_path, capsys):
    a, b = _member_pair(tmp_path)
    SCORE_DAMAGE[damage](b / "scores_val.npz")
    err = refused(call(capsys, ensemble_main, [str(a), str(b), "--out", str(tmp_path / "runs" / "ens")]),
                  "scores_val.npz", not_in=("allow_pickle",))  # fmt: skip
    assert "delete it" in err


def test_f12_a_member_with_nan_val_scores_is_refused(tmp_path, capsys):
    a, b = _member_pair(tmp_path)
    with np.load(b / "scores_val.npz") as z:
        arrays = dict(z)
    np.savez(b / "scores_val.npz", **{**arrays, "logits": np.full_like(arrays["logits"], np.nan)})
    refused(call(capsys, ensemble_main, [str(a), str(b), "--out", str(tmp_path / "runs" / "ens")]), "scores_val.npz", "NaN")
    assert not (tmp_path / "runs" / "ens" / "metrics.json").exists(), "silent: fused NaN"


# ======================================================================= f13-f15: damaged clip and keypoint stores


def _edit_manifest(store: Path, edit) -> None:
    with (store / "manifest.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    rows, columns = edit(rows)
    with (store / "manifest.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _meta(store: Path, edit) -> None:
    meta = json.loads((store / "store.json").read_text())
    edit(meta)
    (store / "store.json").write_text(json.dumps(meta))


def _outside(store: Path, rows, columns):
    elsewhere = store.parent / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    for r in rows:
        shutil.copy(store / r["path"], elsewhere / Path(r["path"]).name)
        r["path"] = str(elsewhere / Path(r["path"]).name)
    return rows, columns


STORE_DAMAGE = {
    # f13
    "store.json-cut": (lambda s: (s / "store.json").write_text('{"frames": 8, "si'), "store.json"),
    "store.json-list": (lambda s: (s / "store.json").write_text("[8, 32]"), "store.json"),
    "store.json-frames-text": (lambda s: _meta(s, lambda m: m.update(frames="eight")), "frames"),
    "labels.txt-not-utf8": (lambda s: (s / "labels.txt").write_bytes(b"\xff\xfe\x00bad\n" * 3), "labels.txt"),
    "manifest-without-path": (lambda s: _edit_manifest(s, lambda rows, c=None: (rows, [k for k in rows[0] if k != "path"])),
                              "path"),
    "manifest-binary": (lambda s: (s / "manifest.csv").write_bytes(b"\x00\xff" * 64), "manifest.csv"),
    # f14
    "manifest-absolute-paths": (lambda s: _edit_manifest(s, lambda rows: _outside(s, rows, list(rows[0]))), "path"),
    "manifest-etc-passwd": (lambda s: _edit_manifest(s, lambda rows: ([{**r, "path": "../../../../etc/passwd"} for r in rows],
                                                                       list(rows[0]))), "path"),
    # f15
    "no-num_classes-extra-labels": (lambda s: (_meta(s, lambda m: m.pop("num_classes")),
                                               (s / "labels.txt").write_text((s / "labels.txt").read_text() + "x\ny\n")),
                                    "num_classes"),
    # minor: a row of an unknown split was dropped without a word
    "manifest-unknown-split": (lambda s: _edit_manifest(s, lambda rows: ([{**rows[0], "split": "holdout"}, *rows[1:]],
                                                                          list(rows[0]))), "split"),
}  # fmt: skip


@pytest.mark.parametrize("damage", list(STORE_DAMAGE))
def test_f13_f14_f15_training_on_a_damaged_store_names_the_file(damage, toy, tmp_path, capsys):
    store = copy_store(toy, tmp_path)
    edit, named = STORE_DAMAGE[damage]
    edit(store)
    err = refused(call(capsys, train_main, "--data", store, "--results", tmp_path / "res", "--dry-run", "--frames", "8",
                       "--size", "32", "--no-tensorboard"), named, not_in=("delete it",))  # fmt: skip
    assert str(store) in err


def test_f13_a_keypoint_store_without_max_frames_is_named(tmp_path, capsys):
    from utils.train_cli import main
    from wlasl.synthetic_pose import make_synthetic_keypoints

    store = make_synthetic_keypoints(tmp_path / "kp", glosses=2, per_gloss=5)
    _meta(store, lambda m: m.pop("max_frames"))
    refused(call(capsys, lambda argv: main("pose", argv), "--variant", "linear", "--data", store, "--results",
                 tmp_path / "res", "--dry-run"), "store.json", "max_frames")  # fmt: skip


# ======================================================================= f16: preprocess --size 100000


def test_f16_preprocess_size_out_of_range_names_the_option_and_makes_nothing(tmp_path, capsys):
    from main.preprocess import main
    from wlasl.synthetic import make_synthetic

    data = make_synthetic(tmp_path / "raw", glosses=2, per_gloss=2, broken=False)
    out = tmp_path / "s"
    refused(call(capsys, main, "--metadata", data["metadata"], "--videos", data["videos"], "--out", out, "--size",
                 "100000", "--no-progress"), "--size")  # fmt: skip
    assert not out.exists(), "silent: a half-made store"


# ======================================================================= f17: resume knows its store by content


def test_f17_resume_refuses_another_store_in_a_folder_of_the_same_name(toy, tmp_path, capsys):
    first = copy_store(toy, tmp_path / "a")
    args = ["--data", first, "--results", tmp_path / "res", "--frames", "8", "--size", "32", "--epochs", "1",
            "--config", steps_preset(tmp_path, 1), "--batch-size", "2", "--workers", "0", "--no-tensorboard",
            "--run-id", "r"]  # fmt: skip
    assert call(capsys, train_main, *args).rc == 0
    # Another store, same folder name: fewer clips (a row of each split dropped), as a user's other preprocessing.
    other = copy_store(toy, tmp_path / "b")
    _edit_manifest(other, lambda rows: (rows[3:], list(rows[0])))
    args[1] = other
    args[args.index("--epochs") + 1] = "2"
    refused(call(capsys, train_main, *args), "another store", str(other))
    # The same store moved (another folder, another name) resumes: the folder is no part of the result.
    moved = tmp_path / "c" / "renamed"
    shutil.copytree(first, moved)
    args[1] = moved
    a = call(capsys, train_main, *args)
    assert a.rc == 0 and "resuming r from epoch 2" in a.out, (a.err[-500:], a.exc)


# ======================================================================= f18: impossible metrics stay out of the table


@pytest.mark.parametrize("value", [57.0, float("nan"), float("inf"), -0.2])
def test_f18_records_with_impossible_metrics_are_listed_apart(value, tmp_path, capsys):
    from utils.core.records import RunRecord, write_record

    metrics = {s: {"loss": 1.0, "top1": 0.5, "top2": 0.6, "top5": 0.9, "per_class_top1": 0.5, "n": 10} for s in ("val", "test")}
    for seed, top1 in enumerate((0.5, 0.6, value)):
        rec = RunRecord(run_id=f"x3d_xs-wlasl5_32-s{seed}", model="x3d_xs", framework="torch",
                        config={"model": {"name": "x3d_xs"}, "data": {"root": "data/wlasl5_32"}, "train": {"seed": seed}},
                        epochs=1, metrics={**metrics, "test": {**metrics["test"], "top1": top1}}, status="completed",
                        env={"num_classes": 5})  # fmt: skip
        write_record(tmp_path / "res" / "runs" / rec.run_id, rec)
    a = call(capsys, report_main, "--results", tmp_path / "res", "--no-plots", "--format", "csv")
    assert a.rc == 0 and a.exc is None, a.err
    row = next(csv.DictReader(a.out.splitlines()))
    assert float(row["top1_mean"]) == pytest.approx(55.0) and row["n"] == "2", f"wrong table: {row}"
    assert "x3d_xs-wlasl5_32-s2" in (tmp_path / "res" / "tables" / "other_runs.csv").read_text()


# ======================================================================= f19: job files follow the umask


def test_f19_make_slurm_follows_the_umask(tmp_path):
    from utils.cluster.render import write_dir

    old = os.umask(0o027)
    try:
        write_dir({"x.slurm": "#!/bin/bash\n"}, tmp_path / "jobs")
    finally:
        os.umask(old)
    assert oct((tmp_path / "jobs" / "x.slurm").stat().st_mode & 0o777) == oct(0o750)


# ======================================================================= f20: binary inputs


def test_f20_a_binary_experiment_file_is_named(tmp_path, capsys, exp_main):
    path = tmp_path / "exp.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" + bytes(range(256)))
    refused(call(capsys, exp_main, "run", path, "--dry-run"), str(path))


def test_f20_a_binary_published_csv_is_named(toy, tmp_path, capsys):
    path = tmp_path / "published.csv"
    path.write_bytes(b"\xff\xfe\x00model,subset\n" + bytes(range(128, 256)))
    refused(call(capsys, report_main, "--results", toy["root"] / "results", "--published-csv", path, "--no-plots"),
            str(path))


# ======================================================================= minor items


def test_m1_a_killed_exports_temporary_folder_is_cleaned(toy, tmp_path, capsys):
    from utils.core.files import HOST

    run = copy_run(toy, tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for name in (f".onnx_float32.tmp-{HOST}-{dead.stdout.strip()}", f".onnx_float32.tmp-{dead.stdout.strip()}"):
        (run / "exports" / name).mkdir()
        (run / "exports" / name / "model.onnx").write_bytes(b"half")
    assert call(capsys, export_main, [str(run), "--format", "onnx"]).rc == 0
    left = sorted(p.name for p in (run / "exports").iterdir())
    assert left in (["onnx_float32"], sorted(["onnx_float32", f".onnx_float32.tmp-{dead.stdout.strip()}"])), \
        f"silent: {left} left for good"  # the old name (no host) cannot be told from another host's: kept  # fmt: skip
    assert f".onnx_float32.tmp-{HOST}-{dead.stdout.strip()}" not in left


def test_m2_nothing_to_do_names_where_the_run_is_now(toy, tmp_path, capsys):
    results = tmp_path / "moved"
    shutil.copytree(toy["root"] / "results", results)
    # The options train_run trained it with: the same run, so nothing to do.
    args = ["--data", toy["store"], "--results", results, "--frames", "8", "--size", "32", "--epochs", "1",
            "--config", steps_preset(tmp_path, 2), "--batch-size", "4", "--workers", "0", "--dropout", "0.0", "--run-id", "toy"]  # fmt: skip
    a = call(capsys, train_main, *args)
    assert a.rc == 0 and "nothing to do" in a.out, (a.out[-400:], a.err[-400:], a.exc)
    assert f"-> {results}/runs/toy" in a.out, f"unclear: {a.out[-300:]}"


def test_m3_predict_on_a_folder_says_it_is_a_folder(toy, tmp_path, capsys):
    refused(call(capsys, predict_main, [str(tmp_path), "--run", str(toy["run"])]), f"{tmp_path} is a folder",
            not_in=("not found",))  # fmt: skip


def test_m4_metadata_with_no_glosses_makes_no_empty_store(tmp_path, capsys):
    from main.preprocess import main

    (tmp_path / "WLASL_v0.3.json").write_text("[]")
    (tmp_path / "videos").mkdir()
    refused(call(capsys, main, "--metadata", tmp_path / "WLASL_v0.3.json", "--videos", tmp_path / "videos", "--out",
                 tmp_path / "s", "--no-progress", "--frames", "8", "--size", "32"), "WLASL_v0.3.json")  # fmt: skip
    assert not (tmp_path / "s" / "manifest.csv").exists()


def test_m6_a_running_run_is_not_exported(toy, tmp_path, capsys):
    run = copy_run(toy, tmp_path)
    record = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**record, "status": "running"}))
    refused(call(capsys, export_main, [str(run), "--format", "onnx", "--name", "r"]), "running")
