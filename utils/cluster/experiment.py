"""Experiment files: a whole study (stores -> runs -> report) as one YAML file, and its plan.

``load_experiment(path, sets)`` reads and checks the file (``--set key=value``
overrides any field first); ``make_plan(exp)`` turns it into stages of
command lines, which :mod:`utils.cluster.experiment_run` submits as SLURM jobs
chained with ``--dependency`` or runs in order on this machine. Pure: no
file is written and nothing is run here. Example files: ``experiments/``.

File format (every key but ``stores`` and ``runs`` is optional)::

    name: thesis_wlasl100              # folder and job names (default: the file name)
    results: results/experiments/x     # default results/experiments/<name>
    data_root: data                    # stores go to <data_root>/<store name> unless `out` says
    profile: slurm/cluster.toml        # the cluster profile; `cluster:` overrides its kinds
    cluster: {train: {cpus_per_task: 4}}
    stores:
      wlasl100_172:
        metadata: raw/WLASL_v0.3.json
        videos: raw/videos
        nslt: raw/nslt_100.json        # or subset: 100
        size: 172
        frames: 20
        frame_step: 2                  # optional: every 2nd frame
        options: {margin: 0.1}         # any other main/preprocess.py flag
        synthetic: {glosses: 3}        # optional: write a synthetic mini-WLASL there when missing
      wlasl100_pose:
        kind: keypoints                # main/extract_keypoints.py (pose models); default kind: clips
        metadata: raw/WLASL_v0.3.json
        videos: raw/videos
        subset: 100
    runs:
      - models: [movinet_a0, movinet_a1]
        store: wlasl100_172
        seeds: 3                       # 0, 1, 2 (or a list)
        options: {optimizer: rmsprop, lr: 1.0e-3, stream: true}   # --optimizer rmsprop --lr 0.001 --stream
                                       # (tensorboard: false -> --no-tensorboard)
        per_model: {movinet_a1: {batch_size: 2}}
        pretrained: checkpoints/movinet_{variant}_stream           # or {model: path}; {model}/{variant} filled in
    report: {published: true, metrics: [top1, top2, top5], formats: [md, csv, tex]}
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from models.registry import get_model
from utils.cluster.jobs import job_models, model_variant, train_words
from utils.cluster.shell import check_name, check_one_line
from utils.core.records import make_run_id

__all__ = [
    "Experiment",
    "Plan",
    "RunEntry",
    "Stage",
    "StoreEntry",
    "apply_sets",
    "flags",
    "load_experiment",
    "make_plan",
    "report_settings",
]

_TOP = {"name", "results", "data_root", "profile", "cluster", "stores", "runs", "report", "description"}
_STORE = {"kind", "metadata", "videos", "nslt", "subset", "size", "frames", "frame_step", "max_frames", "out", "options",
          "synthetic"}  # fmt: skip
STORE_KINDS = ("clips", "keypoints")
_RUN = {"models", "store", "seeds", "options", "per_model", "pretrained"}
_REPORT = {"published", "metrics", "formats", "split", "include_dry_runs"}
_FORMATS = ("md", "csv", "tex")


@dataclass(frozen=True)
class StoreEntry:
    """One clip store to prepare."""

    name: str
    out: str
    argv: tuple[str, ...]  # the preprocessing command, "python" first
    metadata: str
    videos: str
    synthetic: dict | None = None


@dataclass(frozen=True)
class RunEntry:
    """One training run of the study."""

    run_id: str
    model: str
    seed: int
    store: str
    argv: tuple[str, ...]
    pretrained: str | None = None


@dataclass(frozen=True)
class Stage:
    """One SLURM job (an array when it has several tasks, or ``shards``)."""

    name: str  # job name suffix, e.g. prep-wlasl100_172, train-wlasl100_172, report
    kind: str  # profile kind: preprocess, train, report
    tasks: tuple[tuple[str, tuple[str, ...]], ...]  # (key, argv) per array task
    after: tuple[str, ...] = ()  # stage names it waits for
    dependency: str = "afterok"
    sharded: bool = False  # preprocessing: the same command in every array task, one shard each


@dataclass
class Plan:
    """What ``run`` does, stage by stage, in order."""

    exp: Experiment
    stores: list[StoreEntry] = field(default_factory=list)
    runs: list[RunEntry] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)


@dataclass(frozen=True)
class Experiment:
    """A checked experiment file (after ``--set``)."""

    path: str
    name: str
    results: str
    data_root: str
    profile: str
    cluster: dict
    stores: dict
    runs: list
    report: dict
    raw: dict  # the whole file as read (after --set), written beside the results


def _err(where: str, what: str) -> ValueError:
    return ValueError(f"{where}: {what}")


def _parse_value(text: str):
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_sets(data: dict, sets: list[str], where: str) -> dict:
    """``key.sub.0.x=value`` overrides (``*`` = every item); values are read as YAML (``1``, ``true``, ``[a, b]``)."""
    data = copy.deepcopy(data)
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _err(where, f"--set expected key=value (e.g. runs.0.seeds=1), received {item!r}")
        _set(data, key.split("."), _parse_value(value), f"{where} --set {key}")
    return data


def _set(node, path: list[str], value, where: str) -> None:
    head, rest = path[0], path[1:]
    if isinstance(node, list):
        if head == "*":
            indices = range(len(node))
        elif head.lstrip("-").isdigit() and -len(node) <= int(head) < len(node):
            indices = [int(head)]
        else:
            raise _err(where, f"{head!r} is not an index of a list of {len(node)}")
        for i in indices:
            if rest:
                _set(node[i], rest, value, where)
            else:
                node[i] = copy.deepcopy(value)
        return
    if not isinstance(node, dict):
        raise _err(where, f"cannot set {head!r} inside {node!r}")
    keys = list(node) if head == "*" else [head]
    for k in keys:
        if rest:
            if k not in node or node[k] is None:
                node[k] = {}
            _set(node[k], rest, value, where)
        else:
            node[k] = copy.deepcopy(value)


def _mapping(value, where: str, allowed: set | None = None) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _err(where, f"expected a mapping, received {value!r}")
    if allowed is not None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise _err(where, f"unknown key(s) {unknown}; expected some of {sorted(allowed)}")
    return value


def load_experiment(path: str | Path, sets: list[str] = ()) -> Experiment:
    """Read and check an experiment file; ``sets`` are ``key=value`` overrides.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not YAML, an unknown key, a bad value (the message names the entry).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"experiment file {path} not found; see experiments/ for examples")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    where = str(path)
    data = apply_sets(_mapping(data, where, _TOP), list(sets), where)
    _mapping(data, where, _TOP)
    name = check_name(str(data.get("name") or path.stem), f"{where}: name")
    stores = _mapping(data.get("stores"), f"{where}: stores")
    runs = data.get("runs")
    if not stores or not isinstance(runs, list) or not runs:
        raise _err(where, "expected `stores:` (at least one) and `runs:` (a list of at least one entry)")
    for s, spec in stores.items():
        check_name(str(s), f"{where}: stores: name")
        _mapping(spec, f"{where}: stores.{s}", _STORE)
    for i, run in enumerate(runs):
        _mapping(run, f"{where}: runs[{i}]", _RUN)
    report = _mapping(data.get("report"), f"{where}: report", _REPORT)
    results = str(data.get("results") or f"results/experiments/{name}")
    for key, value in (("results", results), ("data_root", data.get("data_root", "data"))):
        check_one_line(str(value), f"{where}: {key}")
    # The copy written beside the results (the report job reads it) names itself fully.
    data = {**data, "name": name, "results": results}
    return Experiment(path=str(path), name=name, results=results, data_root=str(data.get("data_root") or "data"),
                      profile=str(data.get("profile") or "slurm/cluster.toml"),
                      cluster=_mapping(data.get("cluster"), f"{where}: cluster"), stores=stores, runs=runs,
                      report=report, raw=data)  # fmt: skip


# Options that are on unless switched off: ``false`` is their ``--no-`` flag, not an omitted one.
_NEGATABLE = frozenset({"tensorboard", "resume"})


def flags(options: dict, where: str) -> list[str]:
    """``{batch_size: 4, stream: true, tensorboard: false}`` -> ``--batch-size 4 --stream --no-tensorboard``."""
    out: list[str] = []
    for key, value in _mapping(options, where).items():
        flag = "--" + str(key).replace("_", "-")
        if value is False and key in _NEGATABLE:
            out.append("--no-" + str(key).replace("_", "-"))
            continue
        if value is None or value is False:
            continue
        if value is True:
            out.append(flag)
        elif isinstance(value, list):
            out += [flag, ",".join(str(v) for v in value)]
        elif isinstance(value, dict):
            raise _err(where, f"{key} expected a value, received a mapping {value!r}")
        else:
            out += [flag, check_one_line(str(value), f"{where}: {key}")]
    return out


def _int(value, where: str, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise _err(where, f"expected an integer >= {lo}, received {value!r}")
    return value


def _store(exp: Experiment, name: str, spec: dict) -> StoreEntry:
    where = f"{exp.path}: stores.{name}"
    kind = spec.get("kind", "clips")
    if kind not in STORE_KINDS:
        raise _err(where, f"`kind` expected one of {list(STORE_KINDS)}, received {kind!r}")
    required = ("metadata", "videos", "size", "frames") if kind == "clips" else ("metadata", "videos")
    for key in required:
        if spec.get(key) in (None, ""):
            raise _err(where, f"`{key}` is missing ({', '.join(required)} are required for a {kind} store)")
    misplaced = [k for k in ("size", "frames", "frame_step") if kind == "keypoints" and k in spec] + [
        k for k in ("max_frames",) if kind == "clips" and k in spec]  # fmt: skip
    if misplaced:
        raise _err(where, f"{misplaced} do not apply to a {kind} store")
    if spec.get("subset") is not None and spec.get("nslt") is not None:
        raise _err(where, "give `subset` or `nslt`, not both")
    out = str(spec.get("out") or f"{exp.data_root}/{name}")
    stage = "main/preprocess.py" if kind == "clips" else "main/extract_keypoints.py"
    argv = ["python", stage, "--metadata", str(spec["metadata"]), "--videos", str(spec["videos"])]
    if spec.get("nslt") is not None:
        argv += ["--nslt", str(spec["nslt"])]
    if spec.get("subset") is not None:
        argv += ["--subset", str(_int(spec["subset"], f"{where}.subset"))]
    if kind == "clips":
        argv += ["--frames", str(_int(spec["frames"], f"{where}.frames")), "--size", str(_int(spec["size"], f"{where}.size"))]
    if spec.get("frame_step") is not None:
        argv += ["--frame-step", str(_int(spec["frame_step"], f"{where}.frame_step"))]
    if spec.get("max_frames") is not None:
        argv += ["--max-frames", str(_int(spec["max_frames"], f"{where}.max_frames"))]
    argv += flags(spec.get("options"), f"{where}.options") + ["--out", out]
    synthetic = spec.get("synthetic")
    if synthetic is not None:
        synthetic = _mapping(synthetic, f"{where}.synthetic", {"glosses", "per_gloss", "seed"})
        meta, videos = Path(str(spec["metadata"])), Path(str(spec["videos"]))
        if meta.name != "WLASL_v0.3.json" or videos != meta.parent / "videos":
            raise _err(where, f"a synthetic set is written as <dir>/WLASL_v0.3.json and <dir>/videos; received "
                              f"metadata {meta} and videos {videos}")  # fmt: skip
    for part in argv:
        check_one_line(part, where)
    return StoreEntry(name, out, tuple(argv), str(spec["metadata"]), str(spec["videos"]), synthetic)


def _seeds(value, where: str) -> list[int]:
    if isinstance(value, list):
        return [_int(v, where, lo=0) for v in value]
    return list(range(_int(1 if value is None else value, where)))


def _pretrained(value, model: str, where: str) -> str | None:
    if isinstance(value, dict):
        value = value.get(model)
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise _err(where, f"pretrained expected a path or a mapping model -> path, received {value!r}")
    return value.replace("{model}", model).replace("{variant}", model_variant(model) or model)


def make_plan(exp: Experiment) -> Plan:
    """Stores, runs and the stages that make them: preprocessing arrays, one training array per
    store (``afterok`` on its store), and the report (``afterany`` on every training array).

    Raises:
        ValueError: an unknown model or store, duplicate runs, or a bad value (named).
    """
    plan = Plan(exp=exp)
    stores = {name: _store(exp, name, spec) for name, spec in exp.stores.items()}
    known = job_models()
    by_store: dict[str, list[RunEntry]] = {}
    seen: set[str] = set()
    for i, group in enumerate(exp.runs):
        where = f"{exp.path}: runs[{i}]"
        models = group.get("models")
        models = [models] if isinstance(models, str) else models
        if not models or not isinstance(models, list):
            raise _err(where, "`models` expected a list of model names")
        unknown = [m for m in models if m not in known]
        if unknown:
            raise _err(where, f"unknown model(s) {unknown}; expected names from {known}")
        store = stores.get(str(group.get("store")))
        if store is None:
            raise _err(where, f"store {group.get('store')!r} is not among the stores {sorted(stores)}")
        store_spec = exp.stores[store.name]
        store_kind = store_spec.get("kind", "clips")
        per_model = _mapping(group.get("per_model"), f"{where}.per_model")
        # A model left out (by --set runs.0.models=[...]) may keep its options; a typo may not.
        stray = sorted(set(per_model) - set(known))
        if stray:
            raise _err(f"{where}.per_model", f"unknown model(s) {stray}; expected names from this entry's {models}")
        for model in models:
            wanted = "keypoints" if get_model(model).input == "keypoints" else "clips"
            if wanted != store_kind:
                raise _err(where, f"{model} trains on a {wanted} store, but store {store.name} is a {store_kind} store")
            options = {**_mapping(group.get("options"), f"{where}.options"),
                       **_mapping(per_model.get(model), f"{where}.per_model.{model}")}  # fmt: skip
            label = model + ("_stream" if options.get("stream") else "")
            pretrained = _pretrained(group.get("pretrained"), model, where)
            for seed in _seeds(group.get("seeds"), f"{where}.seeds"):
                run_id = make_run_id(label, store.out, seed)
                if run_id in seen:
                    raise _err(where, f"run {run_id} is planned twice; each model x store x seed once")
                seen.add(run_id)
                # The store's clip length and side unless the options say otherwise.
                fit = [f for k in ("frames", "size") if k not in options and k in store_spec
                       for f in (f"--{k}", str(store_spec[k]))]  # fmt: skip
                argv = [*train_words(model), "--data", store.out, "--results", exp.results, "--seed", str(seed),
                        "--run-id", run_id, *fit, *flags(options, f"{where}.options")]  # fmt: skip
                if pretrained:
                    argv += ["--pretrained", pretrained]
                for part in argv:
                    check_one_line(part, where)
                entry = RunEntry(run_id, model, seed, store.name, tuple(argv), pretrained)
                plan.runs.append(entry)
                by_store.setdefault(store.name, []).append(entry)
    plan.stores = [s for s in stores.values() if s.name in by_store]
    for s in plan.stores:
        plan.stages.append(Stage(f"prep-{s.name}", "preprocess", ((s.name, s.argv),), sharded=True))
    for name, runs in by_store.items():
        plan.stages.append(Stage(f"train-{name}", "train", tuple((r.run_id, r.argv) for r in runs), (f"prep-{name}",)))
    report_argv = ("python", "main/experiment.py", "report", str(Path(exp.results) / "experiment.yaml"))
    plan.stages.append(Stage("report", "report", (("report", report_argv),),
                             tuple(f"train-{n}" for n in by_store), dependency="afterany"))  # fmt: skip
    return plan


def report_settings(exp: Experiment) -> dict:
    """The report section with its defaults: published, metrics, formats, split."""
    r = exp.report
    formats = r.get("formats") or list(_FORMATS)
    formats = [formats] if isinstance(formats, str) else formats
    bad = [f for f in formats if f not in _FORMATS]
    if bad:
        raise _err(f"{exp.path}: report.formats", f"expected some of {list(_FORMATS)}, received {bad}")
    metrics = r.get("metrics")
    return {"published": bool(r.get("published", False)), "formats": formats,
            "metrics": ",".join(metrics) if isinstance(metrics, list) else metrics,
            "split": r.get("split", "test"), "include_dry_runs": bool(r.get("include_dry_runs", False))}  # fmt: skip
