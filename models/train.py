"""The one training entry point behind every ``main/train_<family>.py``.

``run(cfg)`` opens the clip store, builds the registered model, makes the
framework's loaders and hands them to the framework's engine, whose
``fit(model, loaders, cfg, run_dir) -> RunRecord`` does the rest. The CLI
options are defined once here for both frameworks (and reused by tuning).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from pathlib import Path

from models.registry import ModelSpec, get_model, list_models
from utils.core.config import RunConfig, config_from_dict, load_preset
from utils.core.preempt import REQUEUE_EXIT_CODE, Preempted
from utils.core.records import RunRecord, make_run_id
from wlasl.clip_store import ClipStore, StoreError

__all__ = ["ENGINES", "LOADERS", "add_train_args", "config_from_args", "main", "resolve", "run", "train_parser"]

# Engines and loaders per framework, imported on demand so a PyTorch run
# never pays TensorFlow's import (and vice versa).
ENGINES = {"keras": "models.engine_keras", "torch": "models.engine_torch"}
LOADERS = {"keras": "wlasl.loader_tf", "torch": "wlasl.loader_torch"}

# What --dry-run means: enough to exercise every stage, on CPU, in seconds.
DRY_RUN = {"epochs": 1, "steps_per_epoch": 2, "max_clips": 8}


def resolve(cfg: RunConfig, spec: ModelSpec | None = None) -> RunConfig:
    """Fill registry defaults (frames, size), dry-run limits and the run id."""
    spec = spec or get_model(cfg.model.name)
    cfg = cfg.replace(model={"frames": cfg.model.frames or spec.frames, "size": cfg.model.size or spec.size})
    if cfg.dry_run:
        cfg = cfg.replace(
            train={"epochs": DRY_RUN["epochs"], "steps_per_epoch": DRY_RUN["steps_per_epoch"]},
            data={"max_clips": min(cfg.data.max_clips or DRY_RUN["max_clips"], DRY_RUN["max_clips"])},
        )
    if cfg.run_id is None:
        # The streaming MoViNet has other weights than the base one: its own run.
        name = cfg.model.name + ("_stream" if cfg.model.stream else "")
        run_id = make_run_id(name, cfg.data.root, cfg.train.seed)
        cfg = cfg.replace(run_id=run_id + ("-dryrun" if cfg.dry_run else ""))
    return cfg


def run(cfg: RunConfig) -> RunRecord:
    """Train and evaluate one model; returns (and writes) its run record.

    Raises:
        StoreError: no clip store, or it stores fewer frames than the model takes.
        KeyError: unknown model name.
    """
    spec = get_model(cfg.model.name)
    cfg = resolve(cfg, spec)
    store = ClipStore(cfg.data.root)
    store.check_frames(cfg.model.frames)
    if not store.split("train"):
        raise StoreError(f"{store.root} holds no training clips; check prepare_report.json there")
    loaders = importlib.import_module(LOADERS[spec.framework]).make_loaders(store, cfg)
    engine = importlib.import_module(ENGINES[spec.framework])
    # An engine may need the model built in its context (seed, dtype policy,
    # a multi-GPU strategy scope): it offers that as ``build_scope(cfg)``.
    scope = getattr(engine, "build_scope", None)
    with scope(cfg) if scope else contextlib.nullcontext():
        model = spec.build(
            num_classes=store.num_classes,
            frames=cfg.model.frames,
            size=cfg.model.size,
            dropout=cfg.model.dropout,
            freeze=cfg.model.freeze,
            pretrained=cfg.model.pretrained,
            **({"stream": True} if cfg.model.stream else {}),
        )
    return engine.fit(model, loaders, cfg, cfg.run_dir)


def add_train_args(p: argparse.ArgumentParser) -> None:
    """The training options shared by every family and framework (defaults None = keep config)."""
    g = p.add_argument_group("data")
    g.add_argument("--data", help="clip store directory (from main/preprocess.py)")
    g.add_argument("--batch-size", type=int, help="clips per step (default 8)")
    g.add_argument("--workers", type=int, help="loader workers (default 2)")
    g.add_argument("--flip", action="store_true", default=None, help="random horizontal flip (off: handedness matters)")
    g = p.add_argument_group("model")
    g.add_argument("--frames", type=int, help="frames per clip fed to the model (default: the model's, 20)")
    g.add_argument("--size", type=int, help="input side in pixels (default: 172 MoViNet, 224 others)")
    g.add_argument("--dropout", type=float, help="dropout before the classifier (default 0.5)")
    g.add_argument("--freeze", type=int, help="freeze the first K backbone blocks (default 0)")
    g.add_argument("--pretrained", help="local backbone checkpoint; the head is new (see README: weights)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, help="epochs (default 30)")
    g.add_argument("--lr", type=float, help="learning rate (default 1e-3)")
    g.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], help="optimizer (default adam)")
    g.add_argument("--weight-decay", type=float, help="weight decay (default 0)")
    g.add_argument("--schedule", choices=["none", "cosine", "plateau"], help="LR schedule (default cosine)")
    g.add_argument("--early-stop", type=int, help="patience in epochs without val gain (default 0 = off)")
    g.add_argument("--mixed-precision", action="store_true", default=None, help="mixed precision on GPU")
    g.add_argument("--compile", action="store_true", default=None, help="PyTorch: torch.compile the model")
    g.add_argument("--channels-last", action="store_true", default=None, help="PyTorch: channels_last_3d")
    g.add_argument("--seed", type=int, help="random seed (default 0); part of the run id")
    g.add_argument("--no-resume", dest="resume", action="store_false", default=None, help="refuse to resume an existing run")
    g = p.add_argument_group("run")
    g.add_argument("--config", help="YAML preset (sections model/data/train); options given here override it")
    g.add_argument("--run-id", help="run directory name (default <model>-<store>-s<seed>, stable across requeues)")
    g.add_argument("--results", help="results root (default results/)")
    g.add_argument("--dry-run", action="store_true", default=None, help="a few clips, 2 steps, 1 epoch: check before queueing")


_ARG_TO_CONFIG = {
    "data": ("data", "root"),
    "batch_size": ("data", "batch_size"),
    "workers": ("data", "workers"),
    "flip": ("data", "flip"),
    "frames": ("model", "frames"),
    "size": ("model", "size"),
    "dropout": ("model", "dropout"),
    "freeze": ("model", "freeze"),
    "pretrained": ("model", "pretrained"),
    "epochs": ("train", "epochs"),
    "lr": ("train", "lr"),
    "optimizer": ("train", "optimizer"),
    "weight_decay": ("train", "weight_decay"),
    "schedule": ("train", "schedule"),
    "early_stop": ("train", "early_stop"),
    "mixed_precision": ("train", "mixed_precision"),
    "compile": ("train", "compile"),
    "channels_last": ("train", "channels_last"),
    "seed": ("train", "seed"),
    "resume": ("train", "resume"),
    "run_id": (None, "run_id"),
    "results": (None, "results"),
    "dry_run": (None, "dry_run"),
}


def config_from_args(args: argparse.Namespace, model_name: str) -> RunConfig:
    """Code defaults <- YAML preset (--config) <- command-line options."""
    layered: dict = load_preset(args.config) if getattr(args, "config", None) else {}
    layered = {k: dict(v) if isinstance(v, dict) else v for k, v in layered.items()}
    layered.setdefault("model", {})["name"] = model_name
    if getattr(args, "stream", False):
        layered["model"]["stream"] = True
    for arg, (section, key) in _ARG_TO_CONFIG.items():
        value = getattr(args, arg, None)
        if value is None:
            continue
        if section is None:
            layered[key] = value
        else:
            layered.setdefault(section, {})[key] = value
    if "root" not in layered.get("data", {}):
        raise ValueError("--data is required: the clip store made by main/preprocess.py (e.g. data/wlasl100_224)")
    return config_from_dict(layered, where=getattr(args, "config", None) or "options")


def _variant_names(family: str) -> dict[str, str]:
    """``{"a3": "movinet_a3", ...}`` for a family; ``{}`` when it has one model."""
    return {n[len(family) + 1 :]: n for n in list_models(f"{family}_*")}


def train_parser(family: str, doc: str = "") -> argparse.ArgumentParser:
    variants = _variant_names(family)
    p = argparse.ArgumentParser(
        prog=f"main/train_{family}.py",
        description=f"Train and evaluate {family} on a clip store; writes results/runs/<run_id>/.",
        epilog=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if variants:
        p.add_argument("--variant", choices=sorted(variants), required=True, help="model variant")
    if family == "movinet":
        p.add_argument("--stream", action="store_true", help="the causal (streaming) MoViNet")
    add_train_args(p)
    return p


def model_name(family: str, args: argparse.Namespace) -> str:
    variants = _variant_names(family)
    return variants[args.variant] if variants else family


def main(family: str, argv=None, doc: str = "") -> int:
    """Parse, build the RunConfig, train, print where the record is."""
    import models  # noqa: F401  (registers every family)

    args = train_parser(family, doc).parse_args(argv)
    try:
        cfg = config_from_args(args, model_name(family, args))
        record = run(cfg)
    except Preempted as e:
        # Checkpoint saved; the SLURM job script requeues on this exit code.
        print(f"preempted: {e}; checkpoint saved, exit {REQUEUE_EXIT_CODE} asks for a requeue", file=sys.stderr)
        return REQUEUE_EXIT_CODE
    except (StoreError, FileNotFoundError, KeyError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    test = record.metrics.get("test", {})
    print(
        f"{record.status}: {record.run_id}  val top1 {record.best.get('val_top1', float('nan')):.4f}  "
        f"test top1 {test.get('top1', float('nan')):.4f} top2 {test.get('top2', float('nan')):.4f}  "
        f"({record.wall_s:.1f} s) -> {Path(cfg.results) / 'runs' / record.run_id}"
    )
    return 0 if record.status == "completed" else 1
