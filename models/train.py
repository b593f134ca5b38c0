"""Train one configuration: ``run(cfg)`` wires the registry, the store, the loaders and the engine.

``run(cfg)`` opens the store the model reads (``ModelSpec.input``: a clip
store or a keypoint store, see :data:`INPUTS`), builds the registered model,
makes the loaders and hands them to the framework's engine, whose
``fit(model, loaders, cfg, run_dir) -> RunRecord`` does the rest. The
command-line options live in ``utils/train_cli.py`` (the application layer).
"""

from __future__ import annotations

from models.build import ENGINES, INPUTS, LOADERS, build_model, engine_of, loaders_of, open_store
from models.distill import prepare as prepare_distillation
from models.registry import ModelSpec, get_model
from utils.core.config import RunConfig
from utils.core.records import RunRecord, make_run_id
from wlasl.clip_store import StoreError

# ENGINES, INPUTS, LOADERS, build_model, engine_of, loaders_of and open_store live in
# models.build (models.restore and models.distill use them too); they stay importable from here.

__all__ = ["DRY_RUN", "ENGINES", "INPUTS", "LOADERS", "build_model", "engine_of", "loaders_of", "open_store", "resolve", "run"]

# What --dry-run means: enough to exercise every stage, on CPU, in seconds.
DRY_RUN = {"epochs": 1, "steps_per_epoch": 2, "max_clips": 8}


def resolve(cfg: RunConfig, spec: ModelSpec | None = None) -> RunConfig:
    """Fill registry defaults (frames, size), dry-run limits and the run id; check the model options.

    Raises:
        KeyError: unknown model, or an option the model does not declare.
        ValueError, TypeError: a bad option value, or ``stream`` for a model without a streaming variant.
    """
    spec = spec or get_model(cfg.model.name)
    if cfg.model.stream and not spec.streaming:
        raise ValueError(f"{spec.name} has no streaming variant; drop --stream")
    cfg = cfg.replace(
        model={
            "frames": cfg.model.frames or spec.frames,
            "size": cfg.model.size or spec.size,
            "options": spec.check_options(cfg.model.options),
        }
    )
    if cfg.dry_run:
        cfg = cfg.replace(
            train={"epochs": DRY_RUN["epochs"], "steps_per_epoch": DRY_RUN["steps_per_epoch"]},
            data={"max_clips": min(cfg.data.max_clips or DRY_RUN["max_clips"], DRY_RUN["max_clips"])},
        )
    if cfg.run_id is None:
        # The streaming MoViNet has other weights than the base one: its own run.
        name = cfg.model.name + ("_stream" if cfg.model.stream else "")
        run_id = make_run_id(name, cfg.data.root, cfg.train.seed)
        # A student is another run than the same model trained on the labels.
        run_id += "-kd" if cfg.train.teachers else ""
        cfg = cfg.replace(run_id=run_id + ("-dryrun" if cfg.dry_run else ""))
    return cfg


def run(cfg: RunConfig) -> RunRecord:
    """Train and evaluate one model; returns (and writes) its run record.

    Raises:
        StoreError: no store of the model's input kind, or a clip store with fewer frames than the model takes.
        KeyError: unknown model name.
        FileNotFoundError, models.distill.TeacherError: a teacher that cannot teach this student.
    """
    spec = get_model(cfg.model.name)
    cfg = resolve(cfg, spec)
    store = open_store(spec, cfg.data.root, cfg.model.frames)
    if not store.split("train"):
        raise StoreError(f"{store.root} holds no training clips; check its report (prepare_report.json / keypoints_report.json)")
    engine = engine_of(spec)
    # An engine may need to set the process up before the loaders touch its framework.
    prepare = getattr(engine, "prepare_process", None)
    if prepare:
        prepare(cfg)
    loaders = loaders_of(spec).make_loaders(store, cfg)
    distill = None
    if cfg.train.teachers:
        # Every teacher is checked (and an older one scored) before the model is built.
        distill = prepare_distillation(cfg, store, loaders.ids["train"])
        cfg = cfg.replace(tags={**cfg.tags, "teachers": distill.tag})
    model = build_model(cfg, store.num_classes, spec)
    return engine.fit(model, loaders, cfg, cfg.run_dir, distill=distill)
