"""BatchNorm over the global batch of a data-parallel PyTorch run, on any device (gloo on CPU included).

Under DistributedDataParallel every process normalises its own share of the
batch by default, so a run over N processes is not the run of one process
with the whole batch: the statistics of 2 clips differ from those of 8.
PyTorch's ``SyncBatchNorm`` fixes that on GPUs only (it refuses CPU tensors),
so the engine uses this module on every device instead, and a two-node CPU
run is checked against a one-process run (``tests/test_slurm_multinode.py``).

Each process computes the mean and the sum of squared deviations of its
share, per channel; one ``all_reduce`` gathers every process's share (each
writes its own slot, the others are zeros), and the global mean and variance
come from the exact pooled-variance formula (no ``E[x²] - E[x]²``
cancellation). The all-reduce is differentiable (:class:`_SumOverProcesses`):
its backward sums the gradients that reach the statistics from every
process, which is what BatchNorm's gradient over the whole batch needs; DDP
then averages the weights' gradients as usual.
Running statistics are updated with the global values (unbiased variance, as
BatchNorm does), so every process holds the same buffers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GlobalBatchNorm", "to_global_batchnorm"]


class _SumOverProcesses(torch.autograd.Function):
    """``all_reduce(SUM)`` with a gradient: every process's output depends on every process's input, so the
    gradient of an input is the sum of the output gradients of all processes (another all-reduce)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        torch.distributed.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad)
        return grad


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A BatchNorm layer whose training statistics cover every process of the run (any input rank >= 2)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"GlobalBatchNorm expected an input with channels (N, C, ...), received shape {tuple(input.shape)}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        dist = torch.distributed
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        self._check_input_dim(input)
        world, rank, c = dist.get_world_size(), dist.get_rank(), input.shape[1]
        dims = [0, *range(2, input.dim())]
        x = input.float()
        local_mean = x.mean(dims)
        local_m2 = (x - local_mean.view(1, c, *[1] * (x.dim() - 2))).square().sum(dims)
        count = torch.full((1,), float(x.numel() // c), device=x.device)
        mine = torch.cat([local_mean, local_m2, count])
        slots = _SumOverProcesses.apply(F.pad(mine, (rank * mine.numel(), (world - rank - 1) * mine.numel()))).view(world, -1)
        means, m2s, counts = slots[:, :c], slots[:, c : 2 * c], slots[:, 2 * c :]
        n = counts.sum()
        mean = (counts * means).sum(0) / n
        var = (m2s + counts * (means - mean).square()).sum(0) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                unbiased = var.detach() * n / (n - 1).clamp_min(1)
                self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)
        shape = (1, c, *[1] * (x.dim() - 2))
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input.dtype)


def to_global_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm layer replaced by a :class:`GlobalBatchNorm` sharing its tensors.

    The new layers hold the very same parameters and buffers (an optimizer
    built earlier keeps updating them) under the same names (checkpoints keep
    their keys). Returns the module itself, or the replacement when
    ``module`` is a BatchNorm layer.
    """
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        for name in ("weight", "bias"):
            setattr(new, name, getattr(module, name))
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            new._buffers[name] = module._buffers.get(name)
        new.train(module.training)
        return new
    for name, child in list(module.named_children()):
        replaced = to_global_batchnorm(child)
        if replaced is not child:
            setattr(module, name, replaced)
    return module
