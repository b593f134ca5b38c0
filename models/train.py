"""Train one configuration: ``run(cfg)`` wires the registry, the store, the loaders and the engine.

``run(cfg)`` opens the store the model reads (``ModelSpec.input``: a clip
store or a keypoint store, see :data:`INPUTS`), resolves the configuration
against the registry and the store (:func:`resolve`), builds the registered
model, makes the loaders and hands them to the framework's engine
(:class:`models.lifecycle.Engine`), whose ``fit`` does the rest. The
command-line options live in ``utils/train_cli.py`` (the application layer).
"""

from __future__ import annotations

from pathlib import Path

from models.build import ENGINES, INPUTS, LOADERS, build_model, engine_of, loaders_of, open_store
from models.distill import prepare as prepare_distillation
from models.registry import ModelSpec, get_model
from utils.core.config import RunConfig
from utils.core.distenv import dist_env
from utils.core.ids import slug
from utils.core.records import RunRecord
from wlasl.clip_store import StoreError

# ENGINES, INPUTS, LOADERS, build_model, engine_of, loaders_of and open_store live in
# models.build (models.restore and models.distill use them too); they stay importable from here.

__all__ = ["DRY_RUN", "ENGINES", "INPUTS", "LOADERS", "build_model", "engine_of", "loaders_of", "open_store", "resolve",
           "run", "run_id"]  # fmt: skip

# What --dry-run means: enough to exercise every stage, on CPU, in seconds.
DRY_RUN = {"epochs": 1, "steps_per_epoch": 2, "max_clips": 8}


def run_id(cfg: RunConfig) -> str:
    """The run's id, ``cfg.run_id`` when set, else ``<model>[_stream]-<store name>-s<seed>[-kd][-dryrun]``.

    The one rule, for training, sweeps and experiments alike: never a
    timestamp, so a requeued job or a rerun finds and resumes its own run.
    The streaming MoViNet has other weights than the base one, a distilled
    student is another run than the same model trained on the labels, and a
    dry run is no result: each gets its own id.
    """
    if cfg.run_id:
        return cfg.run_id
    name = cfg.model.name + ("_stream" if cfg.model.stream else "")
    base = f"{name}-{Path(str(cfg.data.root).rstrip('/')).name}-s{cfg.train.seed}"
    return slug(base + ("-kd" if cfg.train.teachers else "") + ("-dryrun" if cfg.dry_run else ""))


def resolve(cfg: RunConfig, spec: ModelSpec | None = None, store=None) -> RunConfig:
    """Fill registry defaults (frames, size, warm-up), dry-run limits and the run id; check the model options.

    The input side defaults to the clip store's own (``store``, when given), else
    the model's; a side larger than the store's is refused, with the fix.

    Raises:
        KeyError: unknown model, or an option the model does not declare.
        ValueError, TypeError: a bad option value, or ``stream`` for a model without a streaming variant.
        StoreError: ``--size`` larger than the clip store's side.
    """
    spec = spec or get_model(cfg.model.name)
    if cfg.model.stream and not spec.streaming:
        raise ValueError(f"{spec.name} has no streaming variant; drop --stream")
    stored = store.size if store is not None and INPUTS[spec.input]["fixed_frames"] else None
    size = cfg.model.size or stored or spec.size
    if stored is not None and size > stored:
        raise StoreError(
            f"{store.root} holds {stored}x{stored} clips but this run asks for --size {size}: that would upscale "
            f"every clip. Drop --size (the store's {stored} is the default), or preprocess a {size} store: "
            f"python main/preprocess.py ... --size {size} --out {Path(str(store.root)).parent}/<name>_{size}"
        )
    cfg = cfg.replace(model={"frames": cfg.model.frames or spec.frames, "size": size,
                             "options": spec.check_options(cfg.model.options)})  # fmt: skip
    if cfg.train.warmup_epochs is None:
        cfg = cfg.replace(train={"warmup_epochs": spec.warmup_epochs})
    if cfg.dry_run:
        cfg = cfg.replace(
            train={"epochs": DRY_RUN["epochs"], "steps_per_epoch": DRY_RUN["steps_per_epoch"]},
            data={"max_clips": min(cfg.data.max_clips or DRY_RUN["max_clips"], DRY_RUN["max_clips"])},
        )
    return cfg.replace(run_id=run_id(cfg))


def run(cfg: RunConfig) -> RunRecord:
    """Train and evaluate one model; returns (and writes) its run record.

    Raises:
        StoreError: no store of the model's input kind, a clip store with fewer frames than the
            model takes, or a smaller side than ``--size`` asks for.
        KeyError: unknown model name.
        FileNotFoundError, models.distill.TeacherError: a teacher that cannot teach this student.
    """
    spec = get_model(cfg.model.name)
    store = open_store(spec, cfg.data.root, cfg.model.frames or spec.frames)
    cfg = resolve(cfg, spec, store)
    if not store.split("train"):
        raise StoreError(f"{store.root} holds no training clips; check its report (prepare_report.json / keypoints_report.json)")
    if dist_env()[0] == 0:  # a line before the framework's own start-up, which can take minutes in a batch job
        print(f"{cfg.run_id}: {spec.name} on {store.root} ({len(store.split('train'))} training clips); starting "
              f"{'TensorFlow' if spec.framework == 'keras' else 'PyTorch'}, then the model", flush=True)  # fmt: skip
    engine = engine_of(spec)
    engine.prepare_process(cfg)  # before the loaders touch the framework
    loaders = loaders_of(spec).make_loaders(store, cfg)
    distill = None
    if cfg.train.teachers:
        # Every teacher is checked (and an older one scored) before the model is built.
        distill = prepare_distillation(cfg, store, loaders.ids["train"])
        cfg = cfg.replace(tags={**cfg.tags, "teachers": distill.tag})
    model = build_model(cfg, store.num_classes, spec)
    return engine.fit(model, loaders, cfg, cfg.run_dir, distill=distill)
