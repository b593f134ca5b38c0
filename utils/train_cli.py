"""The command line shared by every ``main/train_<family>.py`` (and the training options of tuning).

Options are defined once for both frameworks; a family's builder options
(``ModelSpec.options``, e.g. MoViNet's ``--stochastic-depth``) become flags
of its script, read from the registry when the parser is built.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from models.registry import family_models, get_model
from models.train import resolve, run
from utils.core.argv import parse_strictly
from utils.core.config import RunConfig, config_from_dict, load_preset
from utils.core.distenv import dist_env
from utils.core.preempt import CANCELLED_EXIT_CODE, REQUEUE_EXIT_CODE, Cancelled, Preempted

__all__ = ["add_model_options", "add_train_args", "config_from_args", "main", "model_name", "parse_train_argv",
           "refusal", "train_parser", "variant_names"]  # fmt: skip

REPO = Path(__file__).resolve().parents[1]


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
    g.add_argument("--unfreeze-last", type=int, help="train only the last K layers of the backbone (the head always trains)")
    g.add_argument("--pretrained", help="local backbone checkpoint; the head is new (see README: weights)")
    g.add_argument("--pretrained-partial", action="store_true", default=None,
                   help="accept a checkpoint that leaves backbone layers unloaded (recorded in the run record)")  # fmt: skip
    g = p.add_argument_group("training (one policy for both engines: models/policy.py)")
    g.add_argument("--epochs", type=int, help="epochs (default 30)")
    g.add_argument("--lr", type=float, help="learning rate (default 1e-3)")
    g.add_argument("--optimizer", choices=["adam", "adamw", "sgd", "rmsprop"], help="optimizer (default adam)")
    g.add_argument("--momentum", type=float, help="momentum of sgd and rmsprop (default 0.9)")
    g.add_argument("--weight-decay", type=float, help="decoupled weight decay on kernels (default 0)")
    g.add_argument("--clipnorm", type=float, help="clip each gradient tensor's norm to this (default: off)")
    g.add_argument("--schedule", choices=["none", "cosine", "plateau"], help="LR schedule (default cosine)")
    g.add_argument("--warmup-epochs", type=int, help="first epochs' LR rising linearly to the schedule's (default: the model's, "
                   "ModelSpec.warmup_epochs: 0 for most, 5 for pose_transformer)")
    g.add_argument("--early-stop", type=int, help="patience in epochs without val gain (default 0 = off)")
    g.add_argument("--mixed-precision", action="store_true", default=None, help="mixed precision on GPU")
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile (PyTorch) / XLA (Keras)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="PyTorch: channels_last_3d memory format (default: on a CPU for the models whose registry entry "
                   "says it is faster there, X3D and S3D; off otherwise)")
    g.add_argument("--seed", type=int, help="random seed (default 0); part of the run id")
    g.add_argument("--no-resume", dest="resume", action="store_false", default=None, help="refuse to resume an existing run")
    g = p.add_argument_group("knowledge distillation (models/distill.py, docs/distillation.md)")
    g.add_argument("--teacher", dest="teachers", type=_run_dirs, metavar="RUN_DIR[,RUN_DIR...]",
                   help="finished runs (either engine) whose train-split scores are the soft targets; several are averaged")
    g.add_argument("--kd-alpha", type=float, help="A in A*CE(labels) + (1-A)*T^2*KL(teacher||student) (default 0.5; 0 = soft targets only)")
    g.add_argument("--kd-temperature", type=float, help="softmax temperature T of teacher and student (default 4)")
    g = p.add_argument_group("run")
    g.add_argument("--config", help="YAML preset (sections model/data/train); options given here override it")
    g.add_argument("--run-id", help="run directory name (default <model>-<store>-s<seed>, stable across requeues)")
    g.add_argument("--results", help="results root (default results/)")
    g.add_argument("--dry-run", action="store_true", default=None, help="a few clips, 2 steps, 1 epoch: check before queueing")
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                   help="TensorBoard event files in <run dir>/tb/ (curves, heartbeat loss, final images, HParams): "
                        "on by default, off for --dry-run; watch with: tensorboard --logdir results")  # fmt: skip
    g.add_argument("--tag", dest="tags", action="append", type=_tag, metavar="KEY=VALUE",
                   help="a label copied into the run record (repeatable); experiments tag their runs plan=<name>")  # fmt: skip


_ARG_TO_CONFIG = {
    "data": ("data", "root"),
    "batch_size": ("data", "batch_size"),
    "workers": ("data", "workers"),
    "flip": ("data", "flip"),
    "frames": ("model", "frames"),
    "size": ("model", "size"),
    "dropout": ("model", "dropout"),
    "freeze": ("model", "freeze"),
    "unfreeze_last": ("model", "unfreeze_last"),
    "pretrained": ("model", "pretrained"),
    "pretrained_partial": ("model", "pretrained_partial"),
    "epochs": ("train", "epochs"),
    "lr": ("train", "lr"),
    "optimizer": ("train", "optimizer"),
    "momentum": ("train", "momentum"),
    "weight_decay": ("train", "weight_decay"),
    "clipnorm": ("train", "clipnorm"),
    "schedule": ("train", "schedule"),
    "warmup_epochs": ("train", "warmup_epochs"),
    "early_stop": ("train", "early_stop"),
    "mixed_precision": ("train", "mixed_precision"),
    "compile": ("train", "compile"),
    "channels_last": ("train", "channels_last"),
    "seed": ("train", "seed"),
    "resume": ("train", "resume"),
    "teachers": ("train", "teachers"),
    "kd_alpha": ("train", "kd_alpha"),
    "kd_temperature": ("train", "kd_temperature"),
    "run_id": (None, "run_id"),
    "results": (None, "results"),
    "dry_run": (None, "dry_run"),
    "tensorboard": (None, "tensorboard"),
}


def _tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, received {text!r}")
    return key, value


def _run_dirs(text: str) -> list[str]:
    """``--teacher a,b`` -> ["a", "b"]; an empty name is an error."""
    dirs = [d.strip() for d in text.split(",")]
    if not all(dirs):
        raise argparse.ArgumentTypeError(f"expected run directories separated by commas, received {text!r}")
    return dirs


_OPTION_DEST = "model_option__"  # argparse dest prefix of the family's builder options


def add_model_options(p: argparse.ArgumentParser, family: str) -> None:
    """The family's builder options (``ModelSpec.options``) as flags, e.g. ``--stochastic-depth``."""
    seen: dict[str, object] = {}
    for spec in family_models(family):
        for opt in spec.options:
            seen.setdefault(opt.name, opt)
    if not seen:
        return
    g = p.add_argument_group(f"{family} builder options (registry: ModelSpec.options)")
    for name, opt in seen.items():
        kind = (lambda v: v.lower() in ("1", "true", "yes")) if opt.type is bool else opt.type
        g.add_argument(f"--{name.replace('_', '-')}", dest=_OPTION_DEST + name, type=kind, choices=opt.choices,
                       help=f"{opt.help} (default {opt.default})")  # fmt: skip


def config_from_args(args: argparse.Namespace, model_name: str) -> RunConfig:
    """Code defaults <- YAML preset (--config) <- command-line options."""
    layered: dict = load_preset(args.config) if getattr(args, "config", None) else {}
    layered = {k: dict(v) if isinstance(v, dict) else v for k, v in layered.items()}
    model = layered.setdefault("model", {})
    if not isinstance(model, dict):
        raise TypeError(f"{args.config}: section 'model' expected a mapping, received {type(model).__name__}")
    model["name"] = model_name
    if getattr(args, "stream", False):
        model["stream"] = True
    for arg, (section, key) in _ARG_TO_CONFIG.items():
        value = getattr(args, arg, None)
        if value is None:
            continue
        if section is None:
            layered[key] = value
        else:
            if not isinstance(layered.setdefault(section, {}), dict):
                raise TypeError(f"{args.config}: section '{section}' expected a mapping, received {layered[section]!r}")
            layered[section][key] = value
    if getattr(args, "tags", None):
        layered["tags"] = {**(layered.get("tags") or {}), **dict(args.tags)}
    options = {k[len(_OPTION_DEST) :]: v for k, v in vars(args).items() if k.startswith(_OPTION_DEST) and v is not None}
    if options:
        model["options"] = {**(model.get("options") or {}), **options}
    if "root" not in layered.get("data", {}):
        raise ValueError("--data is required: the clip store made by main/preprocess.py (e.g. data/wlasl100_224)")
    return config_from_dict(layered, where=getattr(args, "config", None) or "options")


def variant_names(family: str) -> dict[str, str]:
    """``{"a3": "movinet_a3", ...}`` for a family; ``{}`` when it has one model."""
    return {s.variant: s.name for s in family_models(family) if s.variant}


def train_parser(family: str, doc: str = "") -> argparse.ArgumentParser:
    variants = variant_names(family)
    p = argparse.ArgumentParser(
        prog=f"main/train_{family}.py",
        description=f"Train and evaluate {family} on a clip store; writes results/runs/<run_id>/.",
        epilog=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if variants:
        p.add_argument("--variant", choices=list(variants), required=True, help="model variant")
    if any(s.streaming for s in family_models(family)):
        p.add_argument("--stream", action="store_true", help="the causal (streaming) variant")
    add_train_args(p)
    add_model_options(p, family)
    return p


def model_name(family: str, args: argparse.Namespace) -> str:
    variants = variant_names(family)
    return variants[args.variant] if variants else family


def parse_train_argv(family: str, argv: list[str]) -> RunConfig:
    """The RunConfig a ``main/train_<family>.py ARGV`` command would train (its options parsed and checked).

    What the experiment and sweep planner call to name a run by the one rule
    (``models.train.run_id``) before submitting it.

    Raises:
        ValueError: an option the script refuses (argparse's message; abbreviations too: an experiment's
            ``epoch: 3`` is not ``--epochs``), or a bad value.
        KeyError, TypeError, FileNotFoundError: as :func:`config_from_args`.
    """
    args = parse_strictly(train_parser(family), argv)
    return config_from_args(args, model_name(family, args))


def refusal(e: BaseException) -> bool:
    """Whether ``e`` is one of the suite's own refusals (a ``raise`` statement in its code, whose message says
    what to do) rather than a bug (an error raised inside Python or a library): a refusal is one line, a bug
    keeps its traceback."""
    frames = traceback.extract_tb(e.__traceback__)
    if not frames:
        return True
    last = frames[-1]
    path = Path(last.filename).resolve()
    ours = path.is_relative_to(REPO) and "site-packages" not in path.parts
    return ours and (last.line or "").lstrip().startswith("raise")


def main(family: str, argv=None, doc: str = "") -> int:
    """Parse, build the RunConfig, train, print where the record is (rank 0 only)."""
    import models  # noqa: F401  (registers every family)

    args = train_parser(family, doc).parse_args(argv)
    try:  # the options themselves: every error here is about them
        cfg = config_from_args(args, model_name(family, args))
        resolve(cfg, get_model(cfg.model.name))
    except (FileNotFoundError, KeyError, ValueError, TypeError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 2
    try:
        record = run(cfg)
    except Cancelled as e:
        print(f"cancelled: {e}", file=sys.stderr)
        return CANCELLED_EXIT_CODE
    except Preempted as e:
        # Checkpoint saved; the job (main/job.py) requeues on this exit code.
        print(f"preempted: {e}; exit {REQUEUE_EXIT_CODE} asks for a requeue", file=sys.stderr)
        return REQUEUE_EXIT_CODE
    except Exception as e:  # a refusal (no store, a run that may not resume, ...) is one line; a bug keeps its traceback
        if not refusal(e):
            raise
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 2
    if dist_env()[0] == 0:  # one line per run, not per process
        test = record.metrics.get("test", {})
        print(
            f"{record.status}: {record.run_id}  val top1 {record.best.get('val_top1', float('nan')):.4f}  "
            f"test top1 {test.get('top1', float('nan')):.4f} top2 {test.get('top2', float('nan')):.4f}  "
            f"({record.wall_s:.1f} s) -> {Path(cfg.results) / 'runs' / record.run_id}"  # where it is now, moved or not
        )
    return 0 if record.status == "completed" else 1
