"""Shared fixtures: a synthetic mini-WLASL and its clip store, made once per session."""

from __future__ import annotations

import os
from pathlib import Path


def _share_the_cores() -> None:
    """N pytest-xdist workers on C cores: C // N threads each for PyTorch, TensorFlow and OpenMP (unless set).

    Left alone, every worker's PyTorch and TensorFlow start one thread per core, and two workers on
    2 cores ran a subset of the engine tests in 222 s wall and 385 s of CPU; with one thread each,
    174 s and 270 s. Set before any framework is imported (they read these once); subprocesses
    (the scripts the tests run, the SLURM jobs they submit) inherit them. A variable already set wins.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if workers:
        threads = str(max(1, len(os.sched_getaffinity(0)) // workers))
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
            os.environ.setdefault(var, threads)


_share_the_cores()

import pytest  # noqa: E402

from wlasl.prepare import PrepareConfig, run_prepare  # noqa: E402
from wlasl.synthetic import make_synthetic  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_WLASL = REPO.parent / "shared" / "data" / "wlasl"
# 198 genuine WLASL100 videos of 20 glosses (academic licence: read from ../shared, never committed).
SHARED_REAL = REPO.parent / "shared" / "data" / "wlasl_real"


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> dict:
    """3 glosses x 8 videos, with one missing and one corrupt video."""
    return make_synthetic(tmp_path_factory.mktemp("synthetic"), glosses=3, per_gloss=8, seed=0)


@pytest.fixture(scope="session")
def tiny_store(synthetic, tmp_path_factory) -> Path:
    """The synthetic set preprocessed to 8 frames at 32 px."""
    out = tmp_path_factory.mktemp("store") / "mini3_32"
    cfg = PrepareConfig(metadata=synthetic["metadata"], videos=synthetic["videos"], out=out, frames=8, size=32)
    run_prepare(cfg, progress=False)
    return out


@pytest.fixture()
def suite_models_only(monkeypatch):
    """Only the suite's own models in the registry, for tests that compare with the committed job files.

    Job lists read the registry when they render, so a stand-in model that another
    test in the same worker registered (tests/_tuning_fake.py's ``tinytune``) would
    otherwise get a job file that is, rightly, not committed.
    """
    from models import registry

    own = {name: spec for name, spec in registry._REGISTRY.items() if spec.builder.__module__.startswith("models.")}
    monkeypatch.setattr(registry, "_REGISTRY", own)
    return sorted(own)


def prepare_cfg(synthetic: dict, out: Path, **kw) -> PrepareConfig:
    kw.setdefault("frames", 8)
    kw.setdefault("size", 32)
    return PrepareConfig(metadata=synthetic["metadata"], videos=synthetic["videos"], out=out, **kw)


# The test files that use the one local SLURM cluster (their tests carry the ``slurm`` mark).
SLURM_FILES = ("tests/test_slurm_cluster.py", "tests/test_slurm_experiment.py", "tests/test_slurm_multinode.py")
# The test files that build framework models (TensorFlow, PyTorch), train, tune or export them: marked
# ``integration``, left out of `make test-fast` (the unit tests for the inner loop, a few minutes on
# 2 cores) and run by `make test`. A new file that builds models belongs here.
INTEGRATION_FILES = tuple(f"tests/test_{name}.py" for name in (
    "cnn2d", "comparable_runs", "distenv", "distill", "global_batchnorm", "export_keras", "export_stream", "export_torch", "keras_engine",
    "keras_learning", "keras_models", "keypoints", "pretrained", "torch_cli", "torch_engine", "torch_models",
    "trial_numbering", "tuning", "tuning_engines"))  # fmt: skip


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.split("::", 1)[0] in INTEGRATION_FILES:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under ``-n N --dist load``: every test on its own, except the SLURM files, which run in one worker in turn.

    Two workers on the one cluster would start (and stop) it at the same time
    and fill its two CPUs with each other's jobs. xdist's own ``loadgroup``
    cannot do this with pytest 9.2: it renames ``item._nodeid``, which pytest
    no longer reads, so its groups were silently ignored. The scope below is
    xdist's public scheduling hook and needs no mark.
    """
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SlurmTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "slurm" if nodeid.split("::", 1)[0] in SLURM_FILES else nodeid

    return SlurmTogether(config, log)
