"""The Keras stage of ``make demo``: a tiny MoViNet-a0, trained briefly on the demo store."""

from __future__ import annotations

from pathlib import Path

__all__ = ["demo_stage"]


def demo_stage(root: Path, store: Path, epochs: int = 3):
    """Train MoViNet-a0 for a few epochs on the demo clip store; returns its RunRecord.

    Uses (2+1)D convolutions (about 30x faster than the released 3D ones on
    CPU) at the store's own frames and size (8 x 64² in the demo), so it runs
    in about a minute on 2 cores. The run lands in ``<root>/results/runs/``.
    The point is to show the whole stage working, not accuracy: 3 epochs on
    ~20 clips stay near chance.
    """
    from models import engine_keras
    from models.movinet import build_movinet
    from models.train import resolve
    from utils.core.config import config_from_dict
    from wlasl import loader_tf
    from wlasl.clip_store import ClipStore

    clip_store = ClipStore(store)
    cfg = resolve(
        config_from_dict(
            {
                "model": {"name": "movinet_a0", "frames": clip_store.frames, "size": clip_store.size, "dropout": 0.2},
                "data": {"root": str(store), "batch_size": 8, "workers": 2},
                "train": {"epochs": epochs, "lr": 3e-3, "seed": 0, "schedule": "cosine"},
                "results": str(Path(root) / "results"),
                "run_id": "movinet_a0-demo",
                "tags": {"demo": True, "conv_type": "2plus1d"},
            }
        )
    )
    loaders = loader_tf.make_loaders(clip_store, cfg)
    with engine_keras.build_scope(cfg):
        model = build_movinet(
            num_classes=clip_store.num_classes,
            frames=cfg.model.frames,
            size=cfg.model.size,
            dropout=cfg.model.dropout,
            model_id="a0",
            conv_type="2plus1d",
        )
    record = engine_keras.fit(model, loaders, cfg, cfg.run_dir)
    test = record.metrics["test"]
    print(f"movinet_a0 demo: {record.status}, test top1 {test['top1']:.3f} ({record.wall_s:.0f} s) -> {cfg.run_dir}")
    return record
