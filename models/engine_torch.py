"""The PyTorch training engine: ``fit(model, loaders, cfg, run_dir) -> RunRecord``.

One engine for every PyTorch model (S3D, X3D). It receives a built model
(uint8 clips in, logits out) and :class:`wlasl.transforms.Loaders`, and
never touches the registry or the clip store.

- Device: CUDA if present (bf16 autocast with ``mixed_precision``), else CPU.
- Data parallel: DistributedDataParallel when torchrun / srun started
  several processes (gloo on CPU, nccl on GPU); rank 0 writes the run.
- Checkpoints: ``checkpoints/last.pt`` after every epoch and on preemption
  (model, optimizer, scheduler, scaler, epoch, step, RNG states), written
  atomically; a run directory holding one is resumed. ``checkpoints/best.pt``
  keeps the best-on-val weights, which the final evaluation uses.
- Preemption: SIGUSR1/SIGTERM (see :mod:`utils.core.preempt`) -> checkpoint at
  the next step boundary, record status "stopped", raise ``Preempted``.
"""

from __future__ import annotations

import math
import os
import random
import time
import traceback
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models._torch_checkpoint import load_checkpoint, rng_state, save_atomic
from utils.core.config import RunConfig
from utils.core.distenv import dist_env, set_master_env
from utils.core.files import atomic_write_text
from utils.core.metrics import confusion_matrix, evaluate_logits, write_predictions
from utils.core.preempt import Preempted, PreemptionFlag
from utils.core.records import RunRecord, append_history, environment, write_json, write_record

__all__ = ["build_scope", "evaluate", "fit", "predict", "seed_everything", "train_one_epoch"]


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (call before building the model: initialisation is part of the seed)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def build_scope(cfg: RunConfig):
    """What ``models.train.run`` builds the model inside: the seed, so initial weights are reproducible."""
    seed_everything(cfg.train.seed)
    yield


# ----------------------------------------------------------------------------- setup


class _Setup:
    """Device, process group and precision of this process."""

    def __init__(self, cfg: RunConfig):
        self.rank, self.world, local = dist_env()
        cuda = torch.cuda.is_available()
        self.device = torch.device(f"cuda:{local}" if cuda else "cpu")
        if cuda:
            torch.cuda.set_device(self.device)
        if self.world > 1 and not torch.distributed.is_initialized():
            set_master_env()  # the job's first node and a port from its id (utils.core.distenv)
            torch.distributed.init_process_group("nccl" if cuda else "gloo", rank=self.rank, world_size=self.world)
            if not cuda:  # share the cores instead of oversubscribing them
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.world))
        # bf16 needs no loss scaling; GPUs without bf16 fall back to fp16 + GradScaler.
        self.amp = cfg.train.mixed_precision and cuda
        self.amp_dtype = torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        return torch.autocast("cuda", dtype=self.amp_dtype) if self.amp else nullcontext()

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when it is true on one (a signal may reach one task first)."""
        if self.world == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        torch.distributed.all_reduce(t)
        return bool(t.item() > 0)


def _optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    t = cfg.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=0.9, weight_decay=t.weight_decay)
    opt = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    return opt(params, lr=t.lr, weight_decay=t.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, cfg: RunConfig):
    if cfg.train.schedule == "cosine":
        # Closed form over this run's epochs, not CosineAnnealingLR: that one
        # carries T_max and its last lr in the checkpoint, so a run resumed
        # with more epochs (a promoted Hyperband trial, a raised --epochs)
        # would go on at the old schedule's final lr, 0.
        epochs = cfg.train.epochs
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda e: 0.5 * (1.0 + math.cos(math.pi * min(e, epochs) / epochs))
        )
    if cfg.train.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=3)
    return None


# ----------------------------------------------------------------------------- one epoch


def train_one_epoch(model, loader, opt, setup: _Setup, *, epoch: int, flag, state: dict | None = None) -> dict:
    """Train over ``loader``; returns ``{"loss", "top1", "top5"}`` on the clips seen.

    Args:
        state: running sums of a resumed partial epoch (``loss``, ``top1``,
            ``top5``, ``n``, ``step``); updated in place, so a preemption can
            checkpoint them.

    Raises:
        ValueError: non-finite loss (names the epoch, step and learning rate).
        _Stop: the preemption flag was raised; ``state`` holds the partial epoch.
    """
    model.train()
    s = state if state is not None else {"loss": 0.0, "top1": 0.0, "top5": 0.0, "n": 0, "step": 0}
    for clips, labels in loader:
        if setup.any_rank(flag.requested is not None):
            raise _Stop
        clips = clips.to(setup.device, non_blocking=True)
        labels = labels.to(setup.device, non_blocking=True)
        with setup.autocast():
            logits = model(clips)
            loss = F.cross_entropy(logits.float(), labels)
        if not torch.isfinite(loss):
            lr = opt.param_groups[0]["lr"]
            raise ValueError(
                f"non-finite training loss ({loss.item()}) at epoch {epoch + 1} step {s['step'] + 1} with lr {lr:.3g}; "
                f"lower --lr, or try without --mixed-precision"
            )
        opt.zero_grad(set_to_none=True)
        setup.scaler.scale(loss).backward()
        setup.scaler.step(opt)
        setup.scaler.update()
        n = labels.shape[0]
        top = logits.detach().float().topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]
        s["loss"] += loss.item() * n
        s["top1"] += top[:, 0].sum().item()
        s["top5"] += top.any(dim=1).sum().item()
        s["n"] += n
        s["step"] += 1
    n = max(s["n"], 1)
    return {"loss": s["loss"] / n, "top1": s["top1"] / n, "top5": s["top5"] / n}


class _Stop(Exception):
    """Internal: the preemption flag was seen at a step boundary."""


@torch.no_grad()
def predict(model, loader, setup: _Setup) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of every clip of ``loader``, in order (centre view)."""
    model.eval()
    logits, labels = [], []
    for clips, y in loader:
        with setup.autocast():
            out = model(clips.to(setup.device, non_blocking=True))
        logits.append(out.float().cpu().numpy())
        labels.append(y.numpy())
    n_cls = getattr(_unwrap(model), "num_classes", 0)
    if not logits:
        return np.zeros((0, n_cls), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(logits), np.concatenate(labels)


def evaluate(model, loader, setup: _Setup) -> dict:
    """``{"loss", "top1", "top2", "top5"}`` of ``loader`` (top2 feeds history.csv)."""
    m = evaluate_logits(*predict(model, loader, setup))
    return {k: m[k] for k in ("loss", "top1", "top2", "top5")}


# ----------------------------------------------------------------------------- checkpoints


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain model under DDP and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


# ----------------------------------------------------------------------------- fit


def fit(model: nn.Module, loaders, cfg: RunConfig, run_dir: str | Path, *, flag=None) -> RunRecord:
    """Train ``model``, keep the best-on-val weights, evaluate them on val and test.

    Args:
        model: uint8 clips ``(B, T, H, W, 3)`` -> logits ``(B, num_classes)``.
        loaders: from :func:`wlasl.loader_torch.make_loaders`.
        cfg: the resolved run configuration.
        run_dir: ``results/runs/<run_id>``; resumed when it holds a checkpoint.
        flag: preemption flag (``.requested``); default: a
            :class:`utils.core.preempt.PreemptionFlag` installed for the run.

    Returns:
        The run record (also ``run_dir/metrics.json``).

    Raises:
        Preempted: a signal asked to stop; the checkpoint is saved.
        ValueError: checkpoint and store disagree, a checkpoint exists but
            ``resume`` is off, or the loss diverged.
    """
    # The flag is up before anything is written, so a signal never kills a run half-way.
    with PreemptionFlag() if flag is None else nullcontext(flag) as flag:
        return _fit(model, loaders, cfg, Path(run_dir), flag)


def _fit(model: nn.Module, loaders, cfg: RunConfig, run_dir: Path, flag) -> RunRecord:
    ckpt_dir = run_dir / "checkpoints"
    last, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    setup = _Setup(cfg)
    start = time.perf_counter()
    plain = _unwrap(model)
    n_out = getattr(plain, "num_classes", loaders.num_classes)
    if n_out != loaders.num_classes:
        raise ValueError(f"the model outputs {n_out} classes but the store has {loaders.num_classes}; rebuild it")
    params = sum(p.numel() for p in plain.parameters())
    record = RunRecord(
        run_id=cfg.run_id or run_dir.name,
        model=cfg.model.name,
        framework="torch",
        config=cfg.to_dict(),
        env=environment(params=params, torch=torch.__version__, device=str(setup.device), world_size=setup.world),
        tags=dict(cfg.tags),
    )

    def save_record():
        record.wall_s = round(wall0 + time.perf_counter() - start, 3)
        if setup.main:
            write_record(run_dir, record)

    plain.to(setup.device)
    if cfg.train.channels_last:
        plain.to(memory_format=torch.channels_last_3d)
        if hasattr(plain, "input"):
            plain.input.channels_last = True
    opt = _optimizer(plain, cfg)
    sched = _scheduler(opt, cfg)
    state = {"epoch": 0, "step": 0, "partial": None, "best": {}, "bad_epochs": 0, "wall_s": 0.0}
    if last.is_file():
        if not cfg.train.resume:
            raise ValueError(
                f"{run_dir} already holds a checkpoint and resume is off; pass another --run-id or drop --no-resume"
            )
        ckpt = load_checkpoint(last, plain, opt, sched, setup.scaler, loaders.num_classes)
        state.update({k: ckpt[k] for k in state})
        if isinstance(sched, torch.optim.lr_scheduler.LambdaLR):
            # The optimizer state brought back the old lr; take it from this run's schedule.
            for group, base, factor in zip(opt.param_groups, sched.base_lrs, sched.lr_lambdas):
                group["lr"] = base * factor(sched.last_epoch)
    wall0 = state["wall_s"]
    record.epochs, record.best = state["epoch"], state["best"]
    net = plain
    if cfg.train.compile:
        net = torch.compile(net)
    if setup.world > 1:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[setup.device.index] if setup.device.type == "cuda" else None
        )
    if setup.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", cfg.to_dict())
    save_record()

    def checkpoint(epoch: int, step: int, partial):
        record.wall_s = round(wall0 + time.perf_counter() - start, 3)
        if setup.main:
            save_atomic(
                last,
                {
                    "model": plain.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "scaler": setup.scaler.state_dict(),
                    "epoch": epoch,
                    "step": step,
                    "partial": partial,
                    "best": record.best,
                    "bad_epochs": state["bad_epochs"],
                    "wall_s": record.wall_s,
                    "rng": rng_state(),
                    "num_classes": loaders.num_classes,
                    "model_name": cfg.model.name,
                },
            )

    try:
        for epoch in range(state["epoch"], cfg.train.epochs):
            # A resumed partial epoch restarts at its next batch, with its running sums.
            loaders.train.sampler.set_epoch(epoch, state["step"])
            partial = state["partial"] or {"loss": 0.0, "top1": 0.0, "top5": 0.0, "n": 0, "step": 0}
            state["step"], state["partial"] = 0, None
            try:
                t0 = time.perf_counter()
                train = train_one_epoch(net, loaders.train, opt, setup, epoch=epoch, flag=flag, state=partial)
            except _Stop:
                checkpoint(epoch, partial["step"], partial)
                record.status = "stopped"
                save_record()
                raise Preempted(
                    f"signal {flag.requested} at epoch {epoch + 1}; resume by rerunning the same command"
                ) from None
            val = evaluate(net, loaders.val, setup)
            lr = opt.param_groups[0]["lr"]
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step(val["top1"])
            elif sched is not None:
                sched.step()
            # Best on val (top-1, then loss): never on test.
            prev = record.best
            if not prev or (val["top1"], -val["loss"]) > (prev["val_top1"], -prev["val_loss"]):
                record.best = {"epoch": epoch + 1, "val_top1": val["top1"], "val_loss": val["loss"]}
                state["bad_epochs"] = 0
                if setup.main:
                    save_atomic(best_path, plain.state_dict())
            else:
                state["bad_epochs"] += 1
            record.epochs = epoch + 1
            if setup.main:
                append_history(
                    run_dir,
                    {
                        "epoch": epoch + 1,
                        **{f"train_{k}": round(train[k], 6) for k in ("loss", "top1")},
                        **{f"val_{k}": round(v, 6) for k, v in val.items()},
                        "lr": lr,
                        "wall_s": round(time.perf_counter() - t0, 3),
                    },
                )
            checkpoint(epoch + 1, 0, None)
            save_record()
            if setup.main:
                print(
                    f"epoch {epoch + 1}/{cfg.train.epochs}  train loss {train['loss']:.4f} top1 {train['top1']:.3f}  "
                    f"val loss {val['loss']:.4f} top1 {val['top1']:.3f}  lr {lr:.3g}",
                    flush=True,
                )
            if cfg.train.early_stop and state["bad_epochs"] >= cfg.train.early_stop:
                break
        _final_evaluation(net, plain, loaders, setup, run_dir, best_path, record)
        record.status = "completed"
        save_record()
        return record
    except Preempted:
        raise
    except Exception as e:
        record.status, record.error = "failed", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
        save_record()
        raise
    finally:
        if setup.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _final_evaluation(net, plain, loaders, setup: _Setup, run_dir: Path, best_path: Path, record: RunRecord) -> None:
    """Best-on-val weights -> val and test metrics, predictions.csv, confusion matrix."""
    if best_path.is_file():
        if setup.world > 1:
            torch.distributed.barrier()  # rank 0 wrote it
        plain.load_state_dict(torch.load(best_path, map_location=setup.device, weights_only=True))
    for split, ids in (("val", loaders.val_ids), ("test", loaders.test_ids)):
        logits, labels = predict(net, getattr(loaders, split), setup)
        record.metrics[split] = evaluate_logits(logits, labels)
        if setup.main and split == "test":
            write_predictions(run_dir / "predictions.csv", ids, labels, logits, loaders.glosses)
            cm = confusion_matrix(labels, logits.argmax(1) if len(logits) else labels, loaders.num_classes)
            lines = ["label," + ",".join(map(str, range(loaders.num_classes)))]
            lines += [f"{i}," + ",".join(map(str, row)) for i, row in enumerate(cm)]
            atomic_write_text(run_dir / "confusion_test.csv", "\n".join(lines) + "\n")
    if math.isnan(record.metrics["val"]["top1"]) and setup.main:
        print("warning: the val split is empty; the best epoch is arbitrary", flush=True)
