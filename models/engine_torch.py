"""The PyTorch training engine: ``fit(model, loaders, cfg, run_dir) -> RunRecord``.

One engine for every PyTorch model (S3D, X3D). It receives a built model
(uint8 clips in, logits out) and :class:`wlasl.transforms.Loaders`, and
never touches the registry or the clip store. Every decision about the run
(learning rate, best epoch, early stop, what is written, when to resume) is
:mod:`models.lifecycle` / :mod:`models.policy`'s; this module holds what is
PyTorch-specific:

- device: CUDA if present (bf16 autocast with ``mixed_precision``, fp16 +
  GradScaler where bf16 is missing), else CPU;
- data parallel: DistributedDataParallel when torchrun / srun started several
  processes (gloo on CPU, nccl on GPU), BatchNorm over the global batch
  (:mod:`models._torch_global_bn`), ``--batch-size`` the global batch
  (models/policy.py); rank 0 writes the run;
- the optimizer by the policy's rules (:mod:`models._torch_optim`);
- checkpoint files (``last-*.pt``: model, optimizer, scaler, RNG states;
  ``best-*.pt``: weights), written atomically and fsynced;
- preemption: SIGUSR1/SIGTERM (see :mod:`utils.core.preempt`) -> checkpoint
  at the next step boundary, record "stopped" (or "cancelled"), raise ``Preempted``
  (the epoch loop itself is :meth:`models.lifecycle.Run.train`, shared with Keras);
- distillation: :func:`kd_loss`, the torch form of :func:`models.distill.kd_loss`,
  on soft targets looked up by each clip's ``inputs["index"]``.
"""

from __future__ import annotations

import io
import os
import random
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models import policy
from models._torch_checkpoint import rng_state, set_rng_state
from models._torch_global_bn import to_global_batchnorm
from models._torch_optim import PolicyOptimizer
from models.distill import Distillation, check_fit
from models.lifecycle import Run
from models.registry import get_model
from utils.core.config import RunConfig
from utils.core.distenv import dist_env, set_master_env
from utils.core.files import atomic_write_bytes
from utils.core.preempt import PreemptionFlag
from utils.core.records import RunRecord, environment

__all__ = ["build_scope", "fit", "kd_loss", "load_weights", "predict", "predict_logits", "prepare_process", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (call before building the model: initialisation is part of the seed)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_process(cfg: RunConfig) -> None:
    """Nothing to set up before the loaders: the process group starts in :func:`fit` (models.lifecycle.Engine)."""


@contextmanager
def build_scope(cfg: RunConfig):
    """What ``models.train.run`` builds the model inside: the seed, so initial weights are reproducible."""
    seed_everything(cfg.train.seed)
    yield


class _Setup:
    """Device, process group and precision of this process."""

    def __init__(self, cfg: RunConfig):
        self.rank, self.world, local = dist_env()
        cuda = torch.cuda.is_available()
        self.device = torch.device(f"cuda:{local}" if cuda else "cpu")
        if cuda:
            torch.cuda.set_device(self.device)
        if not cuda:
            # TensorFlow flushes denormal floats on CPU, PyTorch does not by default: a freshly
            # initialised X3D then runs 5-20x slower per step on denormal activations.
            torch.set_flush_denormal(True)
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

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def kd_loss(logits: torch.Tensor, labels: torch.Tensor, teacher_probs: torch.Tensor, *, alpha: float, temperature: float) -> torch.Tensor:
    """Per-clip ``A * CE + (1 - A) * T² * KL(teacher_T || student_T)`` (:func:`models.distill.kd_loss`)."""
    ce = F.cross_entropy(logits, labels, reduction="none")
    log_q = F.log_softmax(logits / temperature, dim=1)
    kl = (torch.xlogy(teacher_probs, teacher_probs) - teacher_probs * log_q).sum(dim=1)  # xlogy: 0 log 0 = 0
    return alpha * ce + (1.0 - alpha) * temperature**2 * kl


class _Trainer:
    """The PyTorch half of :meth:`models.lifecycle.Run.train` (see models.lifecycle.Trainer).

    With distillation, the loss is :func:`kd_loss` against ``targets`` (the soft-target
    table on the device), row = each clip's ``inputs["index"]``.
    """

    def __init__(self, plain: nn.Module, opt: PolicyOptimizer, setup: _Setup, checkpointer: _Checkpoints, *,
                 cfg: RunConfig, augment, distill: Distillation | None):  # fmt: skip
        self.plain, self.opt, self.setup, self.checkpointer = plain, opt, setup, checkpointer
        self.cfg, self.augment, self.distill = cfg, augment, distill
        self.targets = torch.from_numpy(distill.targets).to(setup.device) if distill else None
        self.net: nn.Module | None = None

    def _wrapped(self) -> nn.Module:
        """The model as it trains (torch.compile, DDP), made after any resume has loaded its weights."""
        if self.net is None:
            if self.setup.world > 1:  # the same tensors: the optimizer and the checkpoints are unaffected
                to_global_batchnorm(self.plain)
            net = torch.compile(self.plain) if self.cfg.train.compile else self.plain
            if self.setup.world > 1:
                device_ids = [self.setup.device.index] if self.setup.device.type == "cuda" else None
                net = nn.parallel.DistributedDataParallel(net, device_ids=device_ids)
            self.net = net
        return self.net

    def set_lr(self, lr: float) -> None:
        self.opt.set_lr(lr)

    def begin_epoch(self, batches):
        self._wrapped().train()
        return batches

    def train_step(self, batch) -> tuple[float, float, int]:
        inputs, labels = batch
        setup, net = self.setup, self._wrapped()
        clips = self.augment(inputs, setup.device)  # the loaders' crop, on the model's device
        labels = labels.to(setup.device, non_blocking=True)
        with setup.autocast():
            logits = net(clips)
            if self.distill is None:
                loss = F.cross_entropy(logits.float(), labels)
            else:
                soft = self.targets[inputs["index"].to(setup.device, non_blocking=True)]
                loss = kd_loss(logits.float(), labels, soft, alpha=self.distill.alpha,
                               temperature=self.distill.temperature).mean()  # fmt: skip
        self.opt.zero_grad()
        setup.scaler.scale(loss).backward()
        self.opt.step(setup.scaler)
        n = labels.shape[0]
        sums = torch.stack([loss.detach().double() * n, (logits.detach().argmax(1) == labels).sum().double(),
                            torch.tensor(float(n), dtype=torch.float64, device=labels.device)])  # fmt: skip
        if setup.world > 1:  # the step's sums over the global batch, as the Keras engine reports them
            torch.distributed.all_reduce(sums)
        loss_sum, correct, count = sums.tolist()
        return loss_sum, correct, int(count)

    def stop_requested(self, flag) -> bool:
        return self.setup.any_rank(flag.requested is not None)  # a signal may reach one task first

    def predict(self, data):
        return predict(self._wrapped(), data, self.setup)

    def end_training(self) -> None:
        self.setup.barrier()


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


@torch.no_grad()
def predict_logits(model: nn.Module, loader) -> tuple[np.ndarray, np.ndarray]:
    """Centre-view logits and labels of a restored model over ``loader``, on the GPU when there is one.

    What :mod:`models.distill` scores an older teacher's train split with.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = _unwrap(model).to(device).eval()
    logits, labels = [], []
    for clips, y in loader:
        logits.append(model(clips.to(device)).float().cpu().numpy())
        labels.append(y.numpy())
    return np.concatenate(logits), np.concatenate(labels)


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain model under DDP and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


class _Checkpoints:
    """The engine's files in ``checkpoints/`` (see models.lifecycle.Checkpointer)."""

    def __init__(self, folder: Path, model: nn.Module, opt: PolicyOptimizer, setup: _Setup):
        self.folder, self.model, self.opt, self.setup = folder, model, opt, setup

    def save(self, kind: str, tag: str) -> list[str]:
        name = f"{kind}-{tag}.pt"
        if self.setup.main:
            state = {"model": self.model.state_dict()}
            if kind == "last":
                state.update(optimizer=self.opt.state_dict(), scaler=self.setup.scaler.state_dict(), rng=rng_state())
            buf = io.BytesIO()
            torch.save(state, buf)
            atomic_write_bytes(self.folder / name, buf.getvalue(), fsync=True)
        return [name]

    def load(self, kind: str, files: list[str]) -> None:
        self.setup.barrier()  # rank 0 wrote it
        state = torch.load(self.folder / files[0], map_location=self.setup.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        if kind == "last":
            self.opt.load_state_dict(state["optimizer"])
            self.setup.scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])


def fit(model: nn.Module, loaders, cfg: RunConfig, run_dir: str | Path, *, flag=None, distill: Distillation | None = None) -> RunRecord:
    """Train ``model``, keep the best-on-val weights, evaluate them on every split.

    Args:
        model: uint8 clips ``(B, T, H, W, 3)`` -> logits ``(B, num_classes)``.
        loaders: from :func:`wlasl.loader_torch.make_loaders`.
        cfg: the resolved run configuration.
        run_dir: ``results/runs/<run_id>``; resumed when it holds a checkpoint.
        flag: preemption flag (``.requested``); default: a
            :class:`utils.core.preempt.PreemptionFlag` installed for the run.
        distill: the soft targets of a distillation run (``models.distill.prepare``).

    Returns:
        The run record (also ``run_dir/metrics.json``).

    Raises:
        Preempted: a signal asked to stop; the checkpoint is saved.
        ValueError: the checkpoint does not fit this run, the loss diverged, or
            ``cfg`` names teachers and ``distill`` is missing (or the reverse).
    """
    check_fit(cfg, distill, train_size=len(loaders.ids["train"]), num_classes=loaders.num_classes)
    # The flag is up before anything is written, so a signal never kills a run half-way.
    with PreemptionFlag() if flag is None else nullcontext(flag) as flag:
        setup = _Setup(cfg)
        try:
            return _fit(model, loaders, cfg, Path(run_dir), flag, setup, distill)
        finally:
            if setup.world > 1 and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()


def _fit(model: nn.Module, loaders, cfg: RunConfig, run_dir: Path, flag, setup: _Setup, distill) -> RunRecord:
    plain = _unwrap(model)
    n_out = getattr(plain, "num_classes", loaders.num_classes)
    if n_out != loaders.num_classes:
        raise ValueError(f"the model outputs {n_out} classes but the store has {loaders.num_classes}; rebuild it")
    env = environment(params=sum(p.numel() for p in plain.parameters()), torch=torch.__version__,
                      device=str(setup.device), world_size=setup.world, channels_last=channels_last(cfg, setup.device),
                      pretrained=getattr(plain, "pretrained_report", None))  # fmt: skip
    run = Run(run_dir, cfg, framework="torch", num_classes=loaders.num_classes, env=env, main=setup.main)
    if run.done:
        run.log(f"{run.record.run_id} already completed {run.record.epochs} epochs; nothing to do")
        return run.record
    plain.to(setup.device)
    if env["channels_last"]:
        set_channels_last(plain, True)
    opt = PolicyOptimizer(plain.parameters(), policy.optimizer_settings(cfg.train))
    ckpt = _Checkpoints(run.ckpt_dir, plain, opt, setup)
    trainer = _Trainer(plain, opt, setup, ckpt, cfg=cfg, augment=loaders.augment, distill=distill)
    return run.train(trainer, loaders, flag)


def channels_last(cfg: RunConfig, device: torch.device) -> bool:
    """Whether the model trains in ``channels_last_3d``: the run's choice, else its registry entry's on a CPU."""
    if cfg.train.channels_last is not None:
        return cfg.train.channels_last
    return device.type == "cpu" and get_model(cfg.model.name).channels_last_cpu


def set_channels_last(model: nn.Module, on: bool) -> None:
    """Put ``model``'s weights in ``channels_last_3d`` (or back), and its clip input with them (no copy made there)."""
    model.to(memory_format=torch.channels_last_3d if on else torch.contiguous_format)
    if hasattr(model, "input"):
        model.input.channels_last = on


def load_weights(model: nn.Module, folder: Path, files: list[str]) -> None:
    """Load a run's saved weights (``checkpoints/<files>``, as state.json names them) into ``model``."""
    state = torch.load(Path(folder) / files[0], map_location="cpu", weights_only=True)
    _unwrap(model).load_state_dict(state["model"])
