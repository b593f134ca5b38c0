"""The shared CLI behind every ``main/tune_<family>.py``.

``main(family)`` parses the tuning options plus the training options of
``utils.train_cli.add_train_args``, checks the store and the search space,
resumes (or starts) the study, runs the search, prints and saves the best
hyperparameters and, with ``--final``, trains and tests a full run with them.
TensorFlow (which keras-tuner imports) loads only after the options parsed.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from pathlib import Path

from models.registry import family_models, get_model
from models.tensorboard_run import write_experiment
from models.train import open_store
from utils.core.argv import parse_strictly
from utils.core.config import RunConfig
from utils.core.metrics import OBJECTIVES
from utils.core.preempt import CANCELLED_EXIT_CODE, REQUEUE_EXIT_CODE
from utils.core.records import objective_value
from utils.train_cli import add_model_options, add_train_args, config_from_args, refusal, variant_names
from utils.tuning.space import SpaceError, family_space, load_space_file, tuned_model
from utils.tuning.study import (
    Study,
    best_record,
    check_settings,
    final_config,
    format_best,
    save_best,
    study_label,
    study_name,
)
from wlasl.clip_store import StoreError

__all__ = ["main", "study_of", "tune", "tune_examples", "tune_parser"]

# What --dry-run means for a search: a handful of tiny trials.
# (factor 2 with 2 epochs: two 1-epoch trials, then the better one promoted.)
DRY_RUN = {"max_epochs": 2, "max_trials": 3, "factor": 2, "steps_per_epoch": 2, "max_clips": 8}


def _tuned(space: dict) -> str:
    """``lr 0.0001..0.01, optimizer adam/sgd, ...``: what a family's search space tunes, in space-file names."""
    words = []
    for name, spec in space.items():
        if spec["kind"] in ("float", "int"):
            words.append(f"{name} {spec['min']:g}..{spec['max']:g}")
        elif spec["kind"] == "choice":
            words.append(f"{name} {'/'.join(f'{v:g}' if isinstance(v, float) else str(v) for v in spec['values'])}")
    return ", ".join(words)


def tune_examples(family: str) -> str:
    """The examples under ``main/tune_<family>.py --help``, made from the registry (the family's variant, store and
    search space) so that every script's examples stay true (a test parses each with the script's own parser)."""
    model, script = tuned_model(family), f"python main/tune_{family}.py"
    store = f" --data data/{model.store_name(100)}"
    common = (f" --variant {model.variant}" if model.variant else "") + store
    chief, worker = (f"KERASTUNER_TUNER_ID={who} KERASTUNER_ORACLE_IP={ip} KERASTUNER_ORACLE_PORT=8470"
                     for who, ip in (("chief", "0.0.0.0"), ("tuner1", "$(hostname)")))  # fmt: skip
    lines = [
        "# Bayesian optimisation, 20 trials of 30 epochs over the family's search space (--pretrained PATH",
        "# starts every trial from a local checkpoint):",
        *textwrap.wrap(_tuned(family_space(family)), 100, initial_indent="#   ", subsequent_indent="#   "),
        f"{script} --tuner bayesian{common} --max-trials 20 --max-epochs 30",
        "# Hyperband: budgets of 1..27 epochs, promoted trials resume from their parent's checkpoint",
        f"{script} --tuner hyperband{common} --max-epochs 27",
        "# check everything in a minute before queueing (tiny trials)",
        f"{script} --tuner hyperband{common} --dry-run",
        '# narrow the space (space.yaml: "lr: {min: 1.0e-4, max: 1.0e-3, sampling: log}" / "optimizer: [adam, sgd]"',
        '# / "dropout: 0.3"), then train and test a full run with the best values',
        f"{script} --tuner bayesian{common} --space space.yaml --final",
    ]
    if model.variant:
        lines += [f"# also tune the variant ({'/'.join(sorted(variant_names(family)))}, or those under 'variant:' in --space)",
                  f"{script} --tuner bayesian --tune-variant{store} --max-trials 30"]  # fmt: skip
    lines += [
        "# distributed: one chief (oracle, CPU) and N workers sharing results/ (SLURM array: task 0 is the chief)",
        f"{chief} \\\n    {script} --tuner bayesian{common} --distributed &",
        f"{worker} \\\n    {script} --tuner bayesian{common} --distributed",
        "# afterwards: the best values as a training preset",
        f"{' '.join(model.train_words())}{store} --config results/tuning/<study>/best.yaml",
    ]
    return "Examples:\n" + "\n".join(f"  {line}" for line in lines) + "\n"


def tune_parser(family: str) -> argparse.ArgumentParser:
    variants = variant_names(family)
    p = argparse.ArgumentParser(
        prog=f"main/tune_{family}.py",
        description=textwrap.fill(
            f"Tune {family} hyperparameters with keras-tuner (Hyperband or Bayesian optimisation). Each trial is a "
            "normal training run (checkpoints, run record) under <results>/tuning/<study>/runs/; rerunning the same "
            "command resumes the study. Training options below set everything the search space does not tune; "
            f"--dry-run means at most {DRY_RUN['max_trials']} trials of {DRY_RUN['max_epochs']} epochs x "
            f"{DRY_RUN['steps_per_epoch']} steps on {DRY_RUN['max_clips']} clips."
        ),
        epilog=tune_examples(family),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("tuning")
    g.add_argument("--tuner", choices=["hyperband", "bayesian"], required=True, help="search algorithm")
    if variants:
        g.add_argument("--variant", choices=sorted(variants), help="model variant (required unless --tune-variant)")
        g.add_argument("--tune-variant", action="store_true", help="tune the variant too (all, or those in --space)")
    g.add_argument("--max-trials", type=int, help="bayesian: trials (default 20); hyperband: optional cap")
    g.add_argument("--max-epochs", type=int, help="epochs of a full trial, Hyperband's largest budget (default --epochs, 30)")
    g.add_argument("--factor", type=int, help="hyperband: reduction factor between rounds (default 3; 2 with --dry-run)")
    g.add_argument("--objective", choices=list(OBJECTIVES), default="val_accuracy",
                   help="what to optimise, read from each trial's run record (default val_accuracy = val top-1)")
    g.add_argument("--study", help="study name (default <model>-<tuner>-<store>; the same name resumes)")
    g.add_argument("--space", help="YAML file replacing entries of the family's search space (see utils/tuning/space.py)")
    g.add_argument("--distributed", action="store_true",
                   help="keras-tuner chief/worker mode (KERASTUNER_TUNER_ID/ORACLE_IP/ORACLE_PORT, or a SLURM array)")
    g.add_argument("--chief-timeout-s", type=float, default=600.0, help="worker: how long to wait for the chief (default 600)")
    g.add_argument("--final", action="store_true", help="then train a full run with the best values and test it")
    if any(s.streaming for s in family_models(family)):
        p.add_argument("--stream", action="store_true", help="the causal (streaming) variant")
    add_train_args(p)
    add_model_options(p, family)
    return p


def _base_config(args, family: str) -> tuple[RunConfig, list[str] | None]:
    """The base RunConfig and the variants to tune (or None)."""
    variants = variant_names(family)
    tune_variant = getattr(args, "tune_variant", False)
    if variants and not tune_variant and not args.variant:
        raise ValueError(f"--variant is required for {family} (one of {sorted(variants)}), or pass --tune-variant")
    if variants:
        name = variants[args.variant] if args.variant else variants[sorted(variants)[0]]
    else:
        name = family
    base = config_from_args(args, name)
    if base.dry_run:
        base = base.replace(
            train={"steps_per_epoch": min(base.train.steps_per_epoch or DRY_RUN["steps_per_epoch"], DRY_RUN["steps_per_epoch"])},
            data={"max_clips": min(base.data.max_clips or DRY_RUN["max_clips"], DRY_RUN["max_clips"])},
        )
    return base, (sorted(variants) if tune_variant else None)


def study_of(family: str, argv: list[str]) -> str:
    """The study a ``main/tune_<family>.py ARGV`` command runs (``--study``, else :func:`study_name`), its options
    parsed and checked; what the experiment planner names a tuning step by.

    Raises:
        ValueError: an option the script refuses (argparse's message), or a bad value.
    """
    args = parse_strictly(tune_parser(family), argv)
    base, variants = _base_config(args, family)
    return args.study or study_name(base, args.tuner, family=family if variants else None)


def _check_store(base: RunConfig, model_names: list[str]) -> None:
    """Fail before the search, not in every trial: the store exists and is long enough."""
    for name in model_names:  # the store kind each model reads (clip or keypoint store), checked as training does
        store = open_store(get_model(name), base.data.root, base.model.frames or get_model(name).frames)
    if not store.split("train") or not store.split("val"):
        raise StoreError(f"{store.root} needs train and val clips to tune (val picks the trials); see prepare_report.json")


def tune(args: argparse.Namespace, family: str, train_fn=None) -> int:
    """Run (or resume) a study from parsed options; returns the exit code."""
    base, variants = _base_config(args, family)
    if args.distributed and args.final:
        raise ValueError("--final with --distributed: when the study ends, run the same command without --distributed "
                         "and with --final (the finished study is reloaded and goes straight to the final run)")
    space = family_space(family, variants=variants, overrides=load_space_file(args.space) if args.space else None)
    max_epochs = args.max_epochs or (DRY_RUN["max_epochs"] if base.dry_run else base.train.epochs)
    max_trials = args.max_trials or (DRY_RUN["max_trials"] if base.dry_run else None)
    factor = args.factor or (DRY_RUN["factor"] if base.dry_run else 3)
    if max_epochs < 1 or (max_trials is not None and max_trials < 1) or factor < 2:
        raise ValueError(f"--max-epochs and --max-trials expected >= 1 and --factor >= 2, received "
                         f"{max_epochs}, {max_trials}, {factor}")
    _check_store(base, [f"{family}_{v}" for v in variants] if variants else [base.model.name])
    study = Study(args.study or study_name(base, args.tuner, family=family if variants else None), Path(base.results))
    settings = {
        "family": family, "model": study_label(base, family if variants else None), "tuner": args.tuner, "objective": args.objective, "space": space,
        "max_epochs": max_epochs, "factor": factor if args.tuner == "hyperband" else None,
        "max_trials": max_trials, "data": str(base.data.root), "frames": base.model.frames, "size": base.model.size,
        "seed": base.train.seed, "steps_per_epoch": base.train.steps_per_epoch, "max_clips": base.data.max_clips,
    }
    check_settings(study, settings)
    if base.writes_tensorboard:  # the HParams table's columns: tensorboard --logdir <study root>
        write_experiment(study.root, base)

    chief_listen = None
    if args.distributed:
        from utils.tuning import distributed as dist

        role = dist.resolve_role(os.environ, study.name)
        if role.is_chief:
            listen = dist.publish_chief(role, study.root)
            dist.apply_env(role, listen)
            chief_listen = (listen, role.port)
        else:
            print(f"worker {role.tuner_id}: waiting for the chief of study {study.name}", flush=True)
            dist.apply_env(role, dist.connect_worker(role, study.root, timeout_s=args.chief_timeout_s))

    from utils.tuning.tuner import StudyTuner, make_oracle

    oracle = make_oracle(args.tuner, space=space, objective=args.objective, max_trials=max_trials,
                         max_epochs=max_epochs, factor=factor, seed=base.train.seed)
    tuner = StudyTuner(oracle, study=study, base=base, family=family, objective=args.objective,
                       max_epochs=max_epochs, train_fn=train_fn, chief_listen=chief_listen)
    print(f"study {study.name}: {args.tuner}, objective {args.objective}, max {max_epochs} epochs per trial -> "
          f"{study.root}", flush=True)
    started = time.time()
    try:
        tuner.search()
    except RuntimeError as e:
        if not tuner.stopped_by_failures():
            raise
        print(f"search stopped: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # grpc.RpcError: the chief stopped answering
        if not (args.distributed and chief_listen is None and type(e).__module__.startswith("grpc")):
            raise
        best = study.root / "best.json"
        if best.is_file() and best.stat().st_mtime >= started:
            print(f"worker {os.environ.get('KERASTUNER_TUNER_ID')}: the study ended while this worker started; no more trials")
            return 0
        address = f"{os.environ.get('KERASTUNER_ORACLE_IP')}:{os.environ.get('KERASTUNER_ORACLE_PORT')}"
        print(f"error: worker {os.environ.get('KERASTUNER_TUNER_ID')}: the tuning chief at {address} stopped answering "
              f"({e.code().name if hasattr(e, 'code') else e}); check the chief's log, then rerun this worker",
              file=sys.stderr)
        return 2
    if args.distributed and chief_listen is None:
        print(f"worker {os.environ.get('KERASTUNER_TUNER_ID')}: no more trials; the chief saves the best values")
        return 0

    # The best trial by the objective as its run record holds it (the oracle saw
    # the same number, returned by run_trial; ties go to the earliest trial): the report's rule too.
    ranked = best_record(study, args.objective)
    if ranked is None:
        print(f"no trial of study {study.name} completed; see the records under {study.root / 'runs'}", file=sys.stderr)
        return 1
    trial_id, record = ranked
    values = dict(tuner.oracle.get_trial(trial_id).hyperparameters.values)
    score = objective_value(record, args.objective)
    epochs = int(values.get("tuner/epochs") or max_epochs)
    print(format_best(study, trial_id, args.objective, score, values, study.run_dir(trial_id)))
    preset = save_best(study, trial_id, args.objective, score, values, family, max_epochs)
    print(f"saved {study.root / 'best.json'} and {preset} (a --config preset for main/train_{family}.py)")
    if not args.final:
        return 0

    cfg = final_config(base, study, trial_id, values, family, max(epochs, max_epochs))
    train = train_fn
    if train is None:
        from models.train import run as train
    record = train(cfg)
    test = record.metrics.get("test", {})
    print(f"final run {record.status}: {record.run_id}  val top1 {record.best.get('val_top1', float('nan')):.4f}  "
          f"test top1 {test.get('top1', float('nan')):.4f} top5 {test.get('top5', float('nan')):.4f}  "
          f"-> {cfg.run_dir}")
    return 0 if record.status == "completed" else 1


def main(family: str, argv=None, train_fn=None) -> int:
    """Entry point of ``main/tune_<family>.py``; returns the exit code."""
    import models  # noqa: F401  (registers every family)

    args = tune_parser(family).parse_args(argv)
    try:
        return tune(args, family, train_fn=train_fn)
    except (StoreError, SpaceError, FileNotFoundError, ConnectionError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from keras_tuner.errors import FatalError

        from utils.tuning.tuner import SearchPreempted

        if isinstance(e, SearchPreempted):
            if e.cancelled:
                print(f"cancelled: {e}", file=sys.stderr)
                return CANCELLED_EXIT_CODE
            print(f"preempted: {e}; exit {REQUEUE_EXIT_CODE} asks for a requeue", file=sys.stderr)
            return REQUEUE_EXIT_CODE
        if isinstance(e, FatalError) or refusal(e):  # a bug keeps its traceback
            print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
            return 2
        raise
