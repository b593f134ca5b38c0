"""The PyTorch engine's optimizer, built from :func:`models.policy.optimizer_settings`.

Where PyTorch's stock optimizers differ from the policy (which follows the
Keras side's definitions, so both engines train by one rule) this module
closes the gap:

- weight decay is decoupled and applied to kernels only (``policy.decays``),
  for every optimizer, as ``w -= lr * wd * w`` before the update (Keras'
  ``weight_decay`` of its optimizers), instead of PyTorch's coupled L2 on
  every parameter;
- ``clipnorm`` clips each gradient tensor on its own (Keras' ``clipnorm``),
  not the global norm;
- RMSprop puts epsilon inside the square root, ``g / sqrt(v + eps)``, as
  TensorFlow does (PyTorch adds it outside): with the MoViNet recipe's
  epsilon of 1.0 the two differ a lot;
- Adam adds epsilon to the uncorrected ``sqrt(v)`` ("epsilon hat", Kingma &
  Ba, just before section 2.1), as Keras does; PyTorch adds it after the bias
  correction, which differs in the first steps.
"""

from __future__ import annotations

import torch

from models import policy

__all__ = ["AdamTF", "PolicyOptimizer", "RMSpropTF"]


class AdamTF(torch.optim.Optimizer):
    """Adam as Keras defines it: ``w -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``."""

    def __init__(self, params, lr: float, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7):
        super().__init__(params, {"lr": lr, "beta_1": beta_1, "beta_2": beta_2, "epsilon": epsilon})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["beta_1"], group["beta_2"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["step"] += 1
                t = float(state["step"])
                state["m"].mul_(b1).add_(p.grad, alpha=1 - b1)
                state["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                alpha = group["lr"] * (1 - b2**t) ** 0.5 / (1 - b1**t)
                p.sub_(alpha * state["m"] / (state["v"].sqrt() + group["epsilon"]))


class RMSpropTF(torch.optim.Optimizer):
    """RMSprop as TensorFlow/Keras define it: ``v = rho v + (1 - rho) g²; m = mu m + lr g / sqrt(v + eps); w -= m``."""

    def __init__(self, params, lr: float, rho: float = 0.9, momentum: float = 0.0, epsilon: float = 1e-7):
        super().__init__(params, {"lr": lr, "rho": rho, "momentum": momentum, "epsilon": epsilon})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["velocity"] = torch.zeros_like(p)
                    state["momentum"] = torch.zeros_like(p)
                v = state["velocity"]
                v.mul_(group["rho"]).addcmul_(p.grad, p.grad, value=1 - group["rho"])
                increment = p.grad * torch.rsqrt(v + group["epsilon"]) * group["lr"]
                if group["momentum"] > 0:
                    m = state["momentum"]
                    m.mul_(group["momentum"]).add_(increment)
                    p.sub_(m)
                else:
                    p.sub_(increment)


class PolicyOptimizer:
    """One optimizer step by the policy's rules: unscale, clip per tensor, decay kernels, update.

    Args:
        params: the model's parameters (those without ``requires_grad`` are left out).
        settings: ``policy.optimizer_settings(cfg.train)``.
    """

    def __init__(self, params, settings: dict):
        self.params = [p for p in params if p.requires_grad]
        self.decayed = [p for p in self.params if policy.decays(p.shape)]
        self.weight_decay, self.clipnorm = settings["weight_decay"], settings["clipnorm"]
        kind, lr = settings["kind"], settings["lr"]
        if kind == "adam":
            self.opt = AdamTF(self.params, lr=lr, beta_1=settings["beta_1"], beta_2=settings["beta_2"], epsilon=settings["epsilon"])
        elif kind == "sgd":
            self.opt = torch.optim.SGD(self.params, lr=lr, momentum=settings["momentum"])
        elif kind == "rmsprop":
            self.opt = RMSpropTF(self.params, lr=lr, rho=settings["rho"], momentum=settings["momentum"], epsilon=settings["epsilon"])
        else:
            raise ValueError(f"optimizer expected one of {sorted(policy.OPTIMIZERS)}, received {kind!r}")

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def step(self, scaler) -> None:
        """Apply the gradients of the last backward pass (``scaler``: a GradScaler, enabled or not)."""
        scaler.unscale_(self.opt)
        if self.clipnorm:
            for p in self.params:
                if p.grad is not None:
                    torch.nn.utils.clip_grad_norm_([p], self.clipnorm)
        if self.weight_decay:
            with torch.no_grad():
                for p in self.decayed:
                    p.mul_(1.0 - self.lr * self.weight_decay)
        scaler.step(self.opt)
        scaler.update()

    def state_dict(self) -> dict:
        return self.opt.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state)
