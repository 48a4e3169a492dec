"""Optimizers for replica-stacked parameters, with a learning rate and weight decay per replica.

Every parameter is [R, ...]: replica r's slice is its own network. `torch.optim` takes one learning
rate per parameter tensor, so replicas of one stacked model could only share it; here lr and weight
decay are [R] tensors broadcast over each slice, and every update is elementwise, so replica r
follows exactly the path it would follow alone with its own values (the engine's tests check this
to 1e-5 for every experiment). The updates are torch's own (Adam, SGD with heavy-ball momentum,
Adadelta, L2 weight decay added to the gradient); `tests/trainables/test_optim.py` checks them
against `torch.optim` step by step.

`adadelta_keras` is Adadelta with the defaults of Keras 2.0 (2017, paper 002's time): rho 0.95,
epsilon 1e-8 (torch: 0.9, 1e-6; later Keras 2 releases, tf.keras and Keras 3: 0.95, 1e-7). The
update is the same in both frameworks, epsilon inside both square roots and the new squared-gradient
average in the denominator (Keras 2's `Adadelta.get_updates`, Keras 3's `Adadelta.update_step` and
torch's `_single_tensor_adadelta` agree):
    a ← ρa + (1−ρ)g²;  Δ = g·√(d + ε)/√(a + ε);  d ← ρd + (1−ρ)Δ²;  θ ← θ − lr·Δ.
Keras's default lr was 1.0 until 2.3 (then 1e-3); the learning rate is the caller's `lr`.

The step decay is the paper's (000 A.1): step t (1-based) uses lr · decay^⌊(t - 1)/decay_every⌋,
which is what `torch.optim.lr_scheduler.StepLR` gives when it is stepped after each update.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from torch import Tensor

OptimizerName = Literal["adam", "sgd", "adadelta", "adadelta_keras"]
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
ADADELTA_RHO, ADADELTA_EPS = 0.9, 1e-6  # torch's defaults
KERAS_ADADELTA_RHO, KERAS_ADADELTA_EPS = 0.95, 1e-8  # Keras 2.0's (see the module docstring)


class ReplicaOptimizer:
    """One optimizer step for all replicas; `lr` and `weight_decay` hold one value per replica."""

    def __init__(
        self,
        params: Iterable[Tensor],
        *,
        kind: OptimizerName,
        lr: Sequence[float],
        weight_decay: Sequence[float],
        momentum: float = 0.0,
        lr_decay: float = 1.0,
        decay_every: int = 1,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        replicas = len(lr)
        for p in self.params:
            if p.shape[0] != replicas:
                raise ValueError(
                    f"every parameter must be [R, ...] with R = {replicas} replicas, "
                    f"but got shape {tuple(p.shape)}"
                )
        if kind not in typing.get_args(OptimizerName):
            names = ", ".join(typing.get_args(OptimizerName))
            raise ValueError(f"`optimizer` must be one of {names}, but got {kind!r}")
        self.kind = kind
        device = self.params[0].device if self.params else torch.device("cpu")
        self.lr = torch.tensor(list(lr), dtype=torch.float64, device=device)
        self.weight_decay = torch.tensor(list(weight_decay), dtype=torch.float32, device=device)
        self.decay_l2 = bool((self.weight_decay != 0).any())
        self.momentum = momentum
        self.lr_decay, self.decay_every = lr_decay, decay_every
        self.steps = 0
        self.state: list[dict[str, Tensor]] = [{} for _ in self.params]
        self.frozen: Tensor | None = None  # [R] bool: replicas that no longer update

    def freeze(self, replicas: slice) -> None:
        """Stop updating these replicas (a configuration that diverged or was stopped early)."""
        if self.frozen is None:
            self.frozen = torch.zeros(len(self.lr), dtype=torch.bool, device=self.lr.device)
        self.frozen[replicas] = True

    def current_lr(self) -> Tensor:
        """The learning rate of the next step, per replica [R] (float64)."""
        return self.lr * self.lr_decay ** (self.steps // self.decay_every)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        lr = self.current_lr()
        self.steps += 1
        live = [(p, state) for p, state in zip(self.params, self.state) if p.grad is not None]
        if not live:
            return
        params, states = [p for p, _ in live], [state for _, state in live]
        grads = [p.grad for p in params]
        if self.decay_l2:
            grads = [g + self.weight_decay.view(_shape(p)) * p for g, p in zip(grads, params)]
        updates = getattr(self, f"_{self.kind}")(grads, states)
        cast = {dtype: lr.to(dtype) for dtype in {p.dtype for p in params}}
        steps = torch._foreach_mul(updates, [cast[p.dtype].view(_shape(p)) for p in params])
        if self.frozen is None:
            torch._foreach_sub_(params, steps)
            return
        for p, step in zip(params, steps):  # a frozen replica's update may be NaN: select it out
            p.copy_(torch.where(self.frozen.view(_shape(p)), p, p - step))

    def _adam(self, grads: list[Tensor], states: list[dict[str, Tensor]]) -> list[Tensor]:
        """Adam for all parameters at once: each of its ~8 elementwise operations is one
        `torch._foreach_*` call over the list (the same operations, in the same order, as
        `torch.optim.Adam`'s single-tensor path), not one call per parameter: a tiny net's step
        is bound by the number of calls, and a GPU's by the number of kernel launches."""
        beta1, beta2 = ADAM_BETAS
        for g, state in zip(grads, states):
            if not state:
                state["m"], state["v"] = torch.zeros_like(g), torch.zeros_like(g)
        m, v = [state["m"] for state in states], [state["v"] for state in states]
        torch._foreach_lerp_(m, grads, 1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
        t = self.steps
        denominator = torch._foreach_sqrt(v)
        torch._foreach_div_(denominator, (1 - beta2**t) ** 0.5)
        torch._foreach_add_(denominator, ADAM_EPS)
        updates = torch._foreach_div(m, 1 - beta1**t)
        torch._foreach_div_(updates, denominator)
        return list(updates)

    # Each rule takes every live parameter's gradient and state and returns their updates.

    def _sgd(self, grads: list[Tensor], states: list[dict[str, Tensor]]) -> list[Tensor]:
        if self.momentum == 0:
            return grads
        for g, state in zip(grads, states):
            if not state:
                state["buf"] = g.clone()
            else:
                state["buf"].mul_(self.momentum).add_(g)
        return [state["buf"] for state in states]

    def _adadelta(
        self,
        grads: list[Tensor],
        states: list[dict[str, Tensor]],
        rho: float = ADADELTA_RHO,
        eps: float = ADADELTA_EPS,
    ) -> list[Tensor]:
        deltas = []
        for g, state in zip(grads, states):
            if not state:
                state["sq"], state["acc"] = torch.zeros_like(g), torch.zeros_like(g)
            sq, acc = state["sq"], state["acc"]
            sq.mul_(rho).addcmul_(g, g, value=1 - rho)
            delta = (acc + eps).sqrt() / (sq + eps).sqrt() * g
            acc.mul_(rho).addcmul_(delta, delta, value=1 - rho)
            deltas.append(delta)
        return deltas

    def _adadelta_keras(self, grads: list[Tensor], states: list[dict[str, Tensor]]) -> list[Tensor]:
        return self._adadelta(grads, states, KERAS_ADADELTA_RHO, KERAS_ADADELTA_EPS)


def _shape(p: Tensor) -> tuple[int, ...]:
    """A per-replica [R] tensor's view that broadcasts over p's [R, ...] slices."""
    return (-1,) + (1,) * (p.dim() - 1)
