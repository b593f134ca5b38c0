"""Experiment files and their plan: a study (stores, runs, tuning, ensembles, exports, report) as a DAG of steps.

``load_experiment(path, sets)`` reads a YAML file, applies ``--set key=value``
overrides and checks it from the type hints of :class:`ExperimentFile` (the
one coercion, :func:`utils.core.config.coerce`); ``make_plan(exp)`` turns it
into :class:`Step` s, each a SLURM job (an array when it has several tasks)
with its dependencies. Pure: nothing is written or run here. A sweep is the
same plan with runs only (:func:`sweep_experiment`). The format is in
``docs/experiments.md``; examples in ``experiments/``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from models.registry import get_model, list_models
from utils.core.argv import check_one_line
from utils.core.config import MAX_SEED, YamlSyntaxError, coerce, load_yaml, read_mapping
from utils.core.ids import safe_name
from wlasl.keypoints import parse_keypoint_argv
from wlasl.prepare import parse_prepare_argv

__all__ = ["MAX_SEEDS", "ROOT", "RUNNER_KEYS", "Experiment", "Plan", "Step", "apply_sets", "flags", "load_experiment", "make_plan",
           "own_keys", "sweep_experiment"]  # fmt: skip

ROOT = Path(__file__).resolve().parents[1]  # the repo: paths in experiment files are relative to it


# -- the file, as types (every key is checked against these)


@dataclass(frozen=True)
class Synthetic:
    glosses: int = 3
    per_gloss: int = 8
    seed: int = 0


@dataclass(frozen=True)
class StoreSpec:
    """A store to prepare (``metadata`` + ``videos``; a ``skeleton`` store: ``source``), or one that exists (``out`` alone)."""

    metadata: str | None = None
    videos: str | None = None
    kind: Literal["clips", "keypoints", "skeleton"] = "clips"
    source: str | None = None  # skeleton: the keypoint store (of this file) whose skeletons it draws
    nslt: str | None = None
    subset: int | None = None
    frames: int | None = None
    size: int | None = None
    frame_step: int | None = None
    max_frames: int | None = None
    drop_duplicates: bool = False
    strict: bool = False
    out: str | None = None
    options: dict = field(default_factory=dict)
    synthetic: Synthetic | None = None


@dataclass(frozen=True)
class RunGroup:
    models: str | list[str]
    store: str
    seeds: int | list[int] = 1
    options: dict = field(default_factory=dict)
    per_model: dict[str, dict] = field(default_factory=dict)
    pretrained: str | dict[str, str] | None = None


@dataclass(frozen=True)
class RunRef:
    """A run of this plan: by model, store and seed (``best``: the best of its seeds on val, chosen when it runs)."""

    model: str
    store: str
    seed: int | Literal["best"] = "best"


@dataclass(frozen=True)
class TuningSpec:
    model: str
    store: str
    tuner: Literal["bayesian", "hyperband"]
    max_trials: int | None = None
    max_epochs: int | None = None
    objective: str = "val_accuracy"
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class EnsembleSpec:
    name: str
    members: list[RunRef]
    weights: str = "auto"


@dataclass(frozen=True)
class ExportSpec:
    name: str
    run: RunRef
    format: Literal["onnx", "tflite"]
    int8: bool = False
    predict: str | None = None  # one raw video: main/predict.py's answer goes to <results>/exports/<name>/
    options: dict = field(default_factory=dict)  # main/predict.py options (bbox, start, end, top)


@dataclass(frozen=True)
class ReportSpec:
    published: bool = False
    metrics: list[str] | None = None
    formats: list[Literal["md", "csv", "tex"]] = field(default_factory=lambda: ["md", "csv", "tex"])
    split: Literal["test", "val"] = "test"
    include_dry_runs: bool = False


@dataclass(frozen=True)
class ExperimentFile:
    stores: dict[str, StoreSpec]
    runs: list[RunGroup] = field(default_factory=list)
    tuning: list[TuningSpec] = field(default_factory=list)
    ensembles: list[EnsembleSpec] = field(default_factory=list)
    exports: list[ExportSpec] = field(default_factory=list)
    report: ReportSpec = field(default_factory=ReportSpec)
    name: str | None = None
    description: str = ""
    results: str | None = None
    data_root: str = "data"
    profile: str = "slurm/cluster.toml"
    cluster: dict[str, dict] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)  # {name}: a path that any string value may use


@dataclass(frozen=True)
class Experiment:
    """A checked experiment file (after ``--set``); ``raw`` is written beside the results (jobs read it back)."""

    path: str
    name: str
    results: str
    spec: ExperimentFile
    raw: dict


# -- the plan


@dataclass(frozen=True)
class Step:
    """One SLURM job of the plan (an array when it has several tasks, or ``shards``).

    ``tasks`` are ``(key, argv)``; a key names what the task makes (``store:<name>``,
    ``run:<run id>``, ``tune:<study>``, ``ensemble:<name>``, ``export:<name>``, ``report``)
    and is how ``submitted.json``, the planner and ``status`` follow it. ``after`` are
    ``(afterok|afterany, step name)``.
    """

    name: str
    kind: str  # profile kind: preprocess, train, tune, report, export
    tasks: tuple[tuple[str, tuple[str, ...]], ...]
    after: tuple[tuple[str, str], ...] = ()
    shards: bool = False


@dataclass
class Plan:
    exp: Experiment
    steps: list[Step] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)  # task key -> the file or folder it makes
    runs: dict[str, dict] = field(default_factory=dict)  # run id -> {model, seed, store, pretrained}
    inputs: list[tuple[str, str]] = field(default_factory=list)  # (what, path) the plan reads from outside

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)


def apply_sets(data: dict, sets: list[str], where: str) -> dict:
    """``key.sub.0.x=value`` overrides (``*`` = every item); values are read as YAML (``1``, ``true``, ``[a, b]``)."""
    data = copy.deepcopy(data)
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{where}: --set expected key=value (e.g. runs.0.seeds=1), received {item!r}")
        try:
            value = load_yaml(text, f"{where} --set {key}")
        except YamlSyntaxError:
            value = text
        _set(data, key.split("."), value, f"{where} --set {key}")
    return data


def _set(node, path: list[str], value, where: str) -> None:
    head, rest = path[0], path[1:]
    if isinstance(node, list):
        if head != "*" and not (head.lstrip("-").isdigit() and -len(node) <= int(head) < len(node)):
            raise ValueError(f"{where}: {head!r} is not an index of a list of {len(node)}")
        keys = range(len(node)) if head == "*" else [int(head)]
    elif isinstance(node, dict):
        keys = list(node) if head == "*" else [head]
    else:
        raise ValueError(f"{where}: cannot set {head!r} inside {node!r}")
    for k in keys:
        if rest and isinstance(node, dict) and node.get(k) is None:
            node[k] = {}
        if rest:
            _set(node[k], rest, value, where)
        else:
            node[k] = copy.deepcopy(value)


def load_experiment(path: str | Path, sets: list[str] = ()) -> Experiment:
    """Read and check an experiment file; ``sets`` are ``key=value`` overrides.

    Raises:
        FileNotFoundError: no such file.
        ValueError, KeyError, TypeError: not YAML, an unknown key, a bad value (the message names the entry).
    """
    data = read_mapping(path, "experiment file", "stores:, runs:, ... (examples: experiments/)")
    return experiment_from(apply_sets(data, list(sets), str(path)), str(path))


# Placeholders a `pretrained` pattern fills per model: not names of `paths`.
_PATTERN_WORDS = frozenset({"model", "variant"})


def with_paths(data: dict, where: str) -> dict:
    """``paths: {real: /data/wlasl}`` and ``{real}`` in any string value: one key moves every path using it.

    ``--set paths.real=DIR`` then points the whole file at another folder.
    Only the names ``paths`` declares are filled in; other braces stay.
    """
    paths = data.get("paths") or {}
    if not isinstance(paths, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in paths.items()):
        raise ValueError(f"{where}: paths expected a mapping of names to paths (text), received {paths!r}")
    for key in paths:
        safe_name(key, f"{where}: paths: a name")
        if key in _PATTERN_WORDS:
            raise ValueError(f"{where}: paths: {key!r} is taken ({{model}} and {{variant}} fill `pretrained` patterns)")
    if not paths:
        return data
    word = re.compile(r"\{(" + "|".join(map(re.escape, paths)) + r")\}")

    def fill(value):
        if isinstance(value, str):
            return word.sub(lambda m: paths[m.group(1)], value)
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    return {k: (v if k == "paths" else fill(v)) for k, v in data.items()}


def experiment_from(data: dict, where: str) -> Experiment:
    data = with_paths(data, where)
    spec = coerce(ExperimentFile, data, where)
    name = safe_name(spec.name or Path(where).stem, f"{where}: name")
    results = check_one_line(spec.results or f"results/experiments/{name}", f"{where}: results")
    return Experiment(where, name, results, spec, {**data, "name": name, "results": results})


# The flags the plan itself gives each job, from the file's own keys. Options come after them on the command
# line and would win: a run trained into another results folder than its plan watches, on another store or
# seed, under another run id or model variant. So they are refused as options, saying where they belong.
RUNNER_KEYS = {
    "runs": {"data": "from store:", "results": "from results:", "seed": "from seeds:", "tag": "plan=<name>",
             "run_id": "made from model, store and seed", "variant": "from models:"},
    "stores": {**{k: f"the store's own {k}:" for k in ("metadata", "videos", "out", "nslt", "subset", "frames", "size",
                                                       "frame_step", "max_frames", "drop_duplicates", "strict")},
               "shard": "one per array task", "workers": "the job's CPUs (--workers with --local)"},
    "tuning": {**{k: f"the entry's own {k}:" for k in ("tuner", "objective", "max_trials", "max_epochs")},
               "variant": "from model:", "data": "from store:", "results": "from results:", "tag": "plan=<name>",
               "study": "made from model, tuner and store"},
    "exports": {"run": "from run:", "export": "from format: and int8:", "json": "prediction.txt holds the text"},
}
# Jobs per run group: seeds beyond this are a typo (10**12 would also exhaust memory building the plan).
MAX_SEEDS = 1000


def own_keys(options: dict, kind: str, where: str) -> None:
    """Refuse options that are flags the plan sets itself (:data:`RUNNER_KEYS`), naming where each belongs."""
    clash = {str(k): RUNNER_KEYS[kind][str(k).replace("-", "_")] for k in options if str(k).replace("-", "_") in RUNNER_KEYS[kind]}
    if clash:
        raise ValueError(f"{where}: {sorted(clash)} cannot be options: the experiment sets them itself "
                         f"({'; '.join(f'{k}: {v}' for k, v in clash.items())})")  # fmt: skip


# Options that are on unless switched off: ``false`` is their ``--no-`` flag, not an omitted one.
_NEGATABLE = frozenset({"tensorboard", "resume"})


def flags(options: dict, where: str) -> list[str]:
    """``{batch_size: 4, stream: true, tensorboard: false}`` -> ``--batch-size 4 --stream --no-tensorboard``."""
    out: list[str] = []
    for key, value in options.items():
        flag = "--" + str(key).replace("_", "-")
        if isinstance(value, dict):
            raise ValueError(f"{where}: {key} expected a value, received a mapping {value!r}")
        if value is False and key in _NEGATABLE:
            out.append("--no-" + str(key).replace("_", "-"))
            continue
        if value is True:
            out.append(flag)
        elif value is not None and value is not False:
            out += [flag, check_one_line(",".join(map(str, value)) if isinstance(value, list) else str(value), f"{where}: {key}")]
    return out


def _store_steps(exp: Experiment, plan: Plan) -> dict[str, str]:
    """One preprocessing step per store to prepare; returns each store's folder."""
    outs = {name: s.out or f"{exp.spec.data_root}/{name}" for name, s in exp.spec.stores.items()}
    # Skeleton stores last: each waits for the keypoint store it draws.
    for name, s in sorted(exp.spec.stores.items(), key=lambda item: item[1].kind == "skeleton"):
        where = f"{exp.path}: stores['{safe_name(name, f'{exp.path}: a store name')}']"
        out = outs[name]
        plan.outputs[f"store:{name}"] = out
        if s.kind == "skeleton":
            _skeleton_step(exp, plan, name, s, outs, where)
            continue
        if s.source is not None:
            raise ValueError(f"{where}: `source` belongs to a skeleton store (kind: skeleton), not a {s.kind} store")
        if s.metadata is None and s.videos is None:
            if s.out is None:
                raise ValueError(f"{where}: give `metadata` and `videos` (a store to prepare), or `out` (one that exists)")
            plan.inputs.append((f"store {name}", out))
            continue
        required = ("metadata", "videos", "size", "frames") if s.kind == "clips" else ("metadata", "videos")
        for key in required:
            if getattr(s, key) is None:
                raise ValueError(f"{where}: `{key}` is missing ({', '.join(required)} are required for a {s.kind} store)")
        wrong = ["size", "frames", "frame_step"] if s.kind == "keypoints" else ["max_frames"]
        if [k for k in wrong if getattr(s, k) is not None]:
            raise ValueError(f"{where}: {[k for k in wrong if getattr(s, k) is not None]} do not apply to a {s.kind} store")
        if s.subset is not None and s.nslt is not None:
            raise ValueError(f"{where}: give `subset` or `nslt`, not both")
        own_keys(s.options, "stores", f"{where}['options']")
        argv = ["python", "main/preprocess.py" if s.kind == "clips" else "main/extract_keypoints.py"]
        for key in ("metadata", "videos", "nslt", "subset", "frames", "size", "frame_step", "max_frames"):
            value = getattr(s, key)
            if isinstance(value, int) and value < 1:
                raise ValueError(f"{where}: `{key}` expected >= 1, received {value}")
            argv += [f"--{key.replace('_', '-')}", str(value)] if value is not None else []
        argv += flags({"drop_duplicates": s.drop_duplicates, "strict": s.strict, **s.options}, where) + ["--out", out]
        try:  # every value the job would check, checked now by the script's own parser
            (parse_prepare_argv if s.kind == "clips" else parse_keypoint_argv)(argv[2:])
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        if s.synthetic is not None:
            meta, videos = Path(s.metadata), Path(s.videos)
            if meta.name != "WLASL_v0.3.json" or videos != meta.parent / "videos":
                raise ValueError(f"{where}: a synthetic set is written as <dir>/WLASL_v0.3.json and <dir>/videos; "
                                 f"received metadata {meta} and videos {videos}")  # fmt: skip
        else:
            plan.inputs += [(f"store {name}: {k}", v) for k, v in (("metadata", s.metadata), ("videos", s.videos),
                                                                   ("nslt", s.nslt)) if v]  # fmt: skip
        plan.steps.append(Step(f"prep-{name}", "preprocess", ((f"store:{name}", tuple(argv)),), shards=True))
    return outs


def _skeleton_step(exp: Experiment, plan: Plan, name: str, s: StoreSpec, outs: dict, where: str) -> None:
    """A clip store of skeletons drawn from a keypoint store of this file (main/render_keypoints.py), after it."""
    source = exp.spec.stores.get(s.source) if s.source else None
    if source is None or source.kind != "keypoints":
        keypoints = sorted(n for n, x in exp.spec.stores.items() if x.kind == "keypoints")
        raise ValueError(f"{where}: `source` expected the name of a keypoints store of this file {keypoints}, "
                         f"received {s.source!r}")  # fmt: skip
    if s.frames is None or s.size is None:
        raise ValueError(f"{where}: `frames` and `size` are required for a skeleton store (the clips it draws)")
    given = [k for k in ("metadata", "videos", "nslt", "subset", "frame_step", "max_frames") if getattr(s, k) is not None]
    if given or s.drop_duplicates or s.synthetic is not None:
        raise ValueError(f"{where}: a skeleton store is drawn from its source's keypoints; drop {given or 'the video options'}")
    argv = ["python", "main/render_keypoints.py", "--keypoints", outs[s.source], "--out", outs[name],
            "--frames", str(s.frames), "--size", str(s.size), *flags(s.options, where)]  # fmt: skip
    plan.steps.append(Step(f"prep-{name}", "preprocess", ((f"store:{name}", tuple(argv)),), _after(plan, s.source),
                           shards=True))  # fmt: skip


def _after(plan: Plan, store: str) -> tuple[tuple[str, str], ...]:
    return (("afterok", f"prep-{store}"),) if any(s.name == f"prep-{store}" for s in plan.steps) else ()


def _fit(exp: Experiment, store: str, options: dict) -> list[str]:
    """A run trains at its store's clip length and side unless its options say otherwise."""
    s = exp.spec.stores[store]
    return [w for k in ("frames", "size") if k not in options and getattr(s, k) for w in (f"--{k}", str(getattr(s, k)))]


def _runs(exp: Experiment, plan: Plan, outs: dict) -> None:
    from models.train import run_id
    from utils.train_cli import parse_train_argv

    by_store: dict[str, list] = {}
    for i, group in enumerate(exp.spec.runs):
        where = f"{exp.path}: runs[{i}]"
        models = [group.models] if isinstance(group.models, str) else group.models
        for at, names in ((where, models), (f"{where}['per_model']", list(group.per_model))):
            unknown = [m for m in names if m not in list_models()]
            if unknown or not models:
                raise ValueError(f"{at}: unknown model(s) {unknown}; expected names from {list_models()}")
        if group.store not in exp.spec.stores:
            raise ValueError(f"{where}: store {group.store!r} is not among the stores {sorted(exp.spec.stores)}")
        count = group.seeds if isinstance(group.seeds, int) else len(group.seeds)
        if not 1 <= count <= MAX_SEEDS:
            raise ValueError(f"{where}['seeds'] expected a whole number 1..{MAX_SEEDS} or a list of 1..{MAX_SEEDS} seeds, "
                             f"received {group.seeds!r:.80}")  # fmt: skip
        seeds = group.seeds if isinstance(group.seeds, list) else list(range(group.seeds))
        if min(seeds) < 0 or max(seeds) > MAX_SEED or len(set(seeds)) != len(seeds):
            raise ValueError(f"{where}['seeds'] expected distinct seeds 0..{MAX_SEED}, received {group.seeds!r:.80}")
        for at, options in ((f"{where}['options']", group.options),
                            *((f"{where}['per_model']['{m}']", o) for m, o in group.per_model.items())):  # fmt: skip
            own_keys(options, "runs", at)
        kind = exp.spec.stores[group.store].kind
        for model in models:
            wanted = "keypoints" if get_model(model).input == "keypoints" else "clips"
            if wanted != {"skeleton": "clips"}.get(kind, kind):  # skeleton videos are a clip store
                raise ValueError(f"{where}: {model} trains on a {wanted} store, but store {group.store} is a {kind} store")
            options = {**group.options, **group.per_model.get(model, {})}
            pretrained = group.pretrained.get(model) if isinstance(group.pretrained, dict) else group.pretrained
            if pretrained:
                pretrained = pretrained.replace("{model}", model).replace("{variant}", get_model(model).variant or model)
                plan.inputs.append((f"{model}: --pretrained", pretrained))
            for seed in seeds:
                argv = [*get_model(model).train_words(), "--data", outs[group.store], "--results", exp.results, "--seed", str(seed),
                        "--tag", f"plan={exp.name}", *_fit(exp, group.store, options), *flags(options, f"{where}['options']"),
                        *(["--pretrained", pretrained] if pretrained else [])]  # fmt: skip
                try:
                    rid = run_id(parse_train_argv(get_model(model).family, argv[2:]))  # the id it trains under
                except (ValueError, TypeError, KeyError) as e:
                    raise ValueError(f"{where}: {e.args[0] if isinstance(e, KeyError) else e}") from None
                if rid in plan.runs:
                    raise ValueError(f"{where}: run {rid} is planned twice; each model x store x seed once")
                plan.runs[rid] = {"model": model, "seed": seed, "store": group.store}
                plan.outputs[f"run:{rid}"] = f"{exp.results}/runs/{rid}"
                by_store.setdefault(group.store, []).append((f"run:{rid}", (*argv, "--run-id", rid)))
    for store, tasks in by_store.items():
        plan.steps.append(Step(f"train-{store}", "train", tuple(tasks), _after(plan, store)))


def _ref(exp: Experiment, plan: Plan, ref: RunRef, where: str) -> str:
    """The train step that makes the runs ``ref`` names (checked to exist in the plan)."""
    match = [r for r, v in plan.runs.items() if (v["model"], v["store"]) == (ref.model, ref.store)
             and ref.seed in ("best", v["seed"])]  # fmt: skip
    if not match:
        raise ValueError(f"{where}: no planned run of {ref.model} on {ref.store}"
                         + (f" with seed {ref.seed}" if ref.seed != "best" else "") + "; add it under runs:")  # fmt: skip
    return f"train-{ref.store}"


def make_plan(exp: Experiment) -> Plan:
    """The steps of an experiment: stores -> training arrays (afterok) and tuning studies (afterok) ->
    ensembles and exports (afterany: they pick among the runs that completed) -> the report (afterany on all).

    Raises:
        ValueError: an unknown model or store, a run planned twice, a bad value (named, with its entry).
    """
    from models.ensemble import GRID_STEPS, check_grid, parse_weights
    from models.export.api import check_format
    from models.export.predict import parse_predict_argv
    from utils.reporting.tables import parse_metrics
    from utils.tuning.cli import study_of

    plan = Plan(exp)
    outs = _store_steps(exp, plan)
    _runs(exp, plan, outs)
    file = str(Path(exp.results) / "experiment.yaml")
    for i, t in enumerate(exp.spec.tuning):
        where = f"{exp.path}: tuning[{i}]"
        if t.model not in list_models() or t.store not in outs:
            raise ValueError(f"{where}: model {t.model!r} and store {t.store!r} must be a registered model and a store "
                             f"of this file ({sorted(outs)})")  # fmt: skip
        own_keys(t.options, "tuning", f"{where}['options']")
        spec = get_model(t.model)
        argv = ["--tuner", t.tuner, *(["--variant", spec.variant] if spec.variant else []), "--data", outs[t.store],
                "--results", exp.results, *_fit(exp, t.store, t.options), "--objective", t.objective,
                *flags({"max_trials": t.max_trials, "max_epochs": t.max_epochs, **t.options}, f"{where}['options']")]  # fmt: skip
        try:
            study = study_of(spec.family, argv)  # the name main/tune_<family>.py gives it
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"{where}: {e.args[0] if isinstance(e, KeyError) else e}") from None
        argv = ["python", f"main/tune_{spec.family}.py", *argv, "--study", study]
        plan.outputs[f"tune:{study}"] = f"{exp.results}/tuning/{study}/best.json"
        plan.steps.append(Step(f"tune-{study}", "tune", ((f"tune:{study}", tuple(argv)),), _after(plan, t.store)))
    for kind, entries in (("ensemble", exp.spec.ensembles), ("export", exp.spec.exports)):
        for i, e in enumerate(entries):
            where = f"{exp.path}: {kind}s[{i}]"
            refs = e.members if kind == "ensemble" else [e.run]
            if kind == "ensemble" and len(refs) < 2:
                raise ValueError(f"{where}: an ensemble needs two or more members")
            try:  # what main/ensemble.py, main/export.py and main/predict.py would refuse, refused now
                if kind == "ensemble" and parse_weights(e.weights, len(refs)) == "auto":
                    check_grid(len(refs), GRID_STEPS)
                if kind == "export":
                    check_format(get_model(e.run.model), e.format, e.int8, f"run {e.run.model}")
                    own_keys(e.options, "exports", f"{where}['options']")
                    if e.predict:
                        parse_predict_argv([e.predict, "--run", "RUN", *flags(e.options, f"{where}['options']")])
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
            if kind == "export" and e.predict:
                plan.inputs.append((f"export {e.name}: video", e.predict))
            after = tuple(dict.fromkeys(("afterany", _ref(exp, plan, r, where)) for r in refs))
            key = f"{kind}:{safe_name(e.name, f'{where}: name')}"
            plan.outputs[key] = f"{exp.results}/runs/{e.name}" if kind == "ensemble" else f"{exp.results}/exports/{e.name}"
            plan.steps.append(Step(f"{kind}-{e.name}", "report" if kind == "ensemble" else "export",
                                   ((key, ("python", "main/experiment.py", "step", file, key)),), after))  # fmt: skip
    if not plan.steps:
        raise ValueError(f"{exp.path}: nothing to do; list runs:, tuning:, ensembles: or exports:")
    try:  # the report job's --metrics, checked as utils/report.py checks them
        parse_metrics(",".join(exp.spec.report.metrics or []))
    except ValueError as e:
        raise ValueError(f"{exp.path}: report['metrics']: {e}") from None
    report = ("python", "main/experiment.py", "report", file)
    plan.steps.append(Step("report", "report", (("report", report),), tuple(("afterany", s.name) for s in plan.steps
                                                                           if s.kind != "preprocess")))  # fmt: skip
    return plan


def sweep_experiment(models: list[str], seeds: int, *, name: str, results: str, subset: int = 100, data_root: str = "data",
                     size: int | None = None, store: str | None = None, options: dict | None = None,
                     profile: str = "slurm/cluster.toml", cluster: dict | None = None) -> Experiment:  # fmt: skip
    """A sweep (models x seeds on existing stores) as an experiment with runs only, under ``<results>/sweeps/<name>``.

    Each model trains on ``store`` when given, else on ``<data_root>/wlasl<subset>_<size>`` (its default side
    unless ``size``), or its keypoint store; ``options`` are every run's training options (``{"epochs": 3}``).
    """
    unknown = [m for m in models if m not in list_models()]
    if unknown or not models or seeds < 1:
        raise ValueError(f"a sweep needs >= 1 model and seeds >= 1; unknown model(s) {unknown}; expected names from "
                         f"{list_models()}")  # fmt: skip
    outs = {m: store or f"{data_root}/" + (f"wlasl{subset}_{size}" if size and get_model(m).input == "clip"
                                           else get_model(m).store_name(subset)) for m in models}  # fmt: skip
    label = {out: f"s{i}_{Path(out).name}" for i, out in enumerate(dict.fromkeys(outs.values()))}
    data = {"name": name, "results": f"{results}/sweeps/{name}", "profile": profile, "cluster": cluster or {},
            "stores": {label[out]: {"out": out} for out in label},
            "runs": [{"models": [m], "store": label[outs[m]], "seeds": seeds, "options": options or {}} for m in models]}  # fmt: skip
    return experiment_from(data, f"sweep {safe_name(name, 'sweep name (--name)')}")
