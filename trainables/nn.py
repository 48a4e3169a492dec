"""Replica-batched layers and models.

Every parameter has a leading replica dimension R: R seeds (or R σ values) of one trial train as one
stacked model with batched matmuls and one optimizer step. Adam is elementwise and the training loss
is the *sum* of the replicas' losses, so each replica follows exactly the trajectory it would follow
alone; tests check this to 1e-5.

The σ-normalised layer is eq. 7 of paper 000: the effective weight w̃ = w·σ/(√n·std(w)) is recomputed
in every forward pass, so the weights keep std σ/√n (n = fan-in) throughout training, not only at
initialisation as in Neal (1996). That makes σ⁻¹ act like an RBF kernel's length scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from trainables.config import ExperimentConfig, PerReplica, require

Activation = Literal["tanh", "relu"]
# Above this many input elements the broadcast's temporary costs more memory than the bmm saves.
_BROADCAST_LIMIT = 4_000_000
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"tanh": torch.tanh, "relu": torch.relu}


class ReplicaLinear(nn.Module):
    """y[r] = x[r] @ W[r] + b[r] for every replica r; x is [R, B, n_in], y is [R, B, n_out].

    With `sigma` given (one value per replica) the weights are σ-normalised (eq. 7). `bias_norm`
    follows the paper's public code: a hidden layer's bias is normalised like its weights, the
    output layer's bias is scaled by σ (a 1-element bias has no std to normalise).
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        generators: Sequence[torch.Generator],
        *,
        sigma: Tensor | None = None,
        bias_norm: bool = True,
        output_layer: bool = False,
    ) -> None:
        super().__init__()
        self.n_in, self.n_out = n_in, n_out
        self.normalised = sigma is not None
        self.bias_norm = bias_norm and self.normalised
        self.output_layer = output_layer
        # Each replica draws from its own generator, so replica r's start does not depend on R.
        if self.normalised:
            w = [torch.randn(n_in, n_out, generator=g) for g in generators]
            b = [torch.randn(n_out, generator=g) for g in generators]
        else:  # PyTorch's nn.Linear default: U(-1/√n, 1/√n) for weight and bias
            bound = 1.0 / math.sqrt(n_in)
            w = [(torch.rand(n_in, n_out, generator=g) * 2 - 1) * bound for g in generators]
            b = [(torch.rand(n_out, generator=g) * 2 - 1) * bound for g in generators]
        self.weight = nn.Parameter(torch.stack(w))
        self.bias = nn.Parameter(torch.stack(b))
        sig = sigma if sigma is not None else torch.ones(len(generators))
        self.register_buffer("sigma", sig.reshape(-1, 1, 1).to(torch.float32))

    def effective_weight(self) -> Tensor:
        if not self.normalised:
            return self.weight
        std = self.weight.std(dim=(1, 2), keepdim=True, correction=0)
        return self.weight * (self.sigma / (math.sqrt(self.n_in) * std))

    def effective_bias(self) -> Tensor:
        if not self.bias_norm:
            return self.bias
        sigma = self.sigma[:, :, 0]  # [R, 1]
        if self.output_layer or self.n_out == 1:
            return self.bias * sigma
        std = self.bias.std(dim=1, keepdim=True, correction=0)
        return self.bias * (sigma / (math.sqrt(self.n_in) * std))

    def forward(self, x: Tensor) -> Tensor:
        w, b = self.effective_weight(), self.effective_bias().unsqueeze(1)
        if self.n_in == 1:
            # An outer product: broadcasting beats a bmm with inner dimension 1.
            return x * w + b
        if self.n_in <= 4 and x.numel() * self.n_out <= _BROADCAST_LIMIT:
            # A tiny fan-in (2-D inputs) is also a slow bmm on CPU: 10-25x slower than this.
            return (x.unsqueeze(-1) * w.unsqueeze(1)).sum(dim=-2) + b
        if self.n_out == 1 and x.numel() <= _BROADCAST_LIMIT:
            # CPU bmm takes a slow path for a single output column; a product and a sum do not.
            return (x * w.mT).sum(dim=-1, keepdim=True) + b
        return torch.baddbmm(b, x, w)


class _TanhNet1D(torch.autograd.Function):
    """y = tanh(x·w₁ + b₁) @ w₂ + b₂ for 1-D inputs and outputs, with a hand-written backward.

    The network the sinusoid sweeps train is this one, and its step is bound by passes over the
    [R, N, width] activations (`benchmarks/kernels.py`): autograd makes ~15 (the products, sums,
    tanh's derivative, their gradients), this makes 6. Forward: one fused multiply-add, tanh in
    place, one batched matmul. Backward: the gradients of w₁ and b₁ are
    Σₙ (gyₙ·[1, xₙ]) (1 − hₙ²) · w₂, one batched matmul over 1 − h² (formed in one fused pass, so
    nothing cancels); w₂'s is another. Same values as autograd's to float32 rounding (~5e-7).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
        h = torch.addcmul(b1, x, w1).tanh_()
        ctx.save_for_backward(x, h, w2)
        return torch.baddbmm(b2, h, w2)

    @staticmethod
    def backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, ...]:
        x, h, w2 = ctx.saved_tensors
        slope = torch.addcmul(torch.ones((), dtype=h.dtype, device=h.device), h, h, value=-1)
        coef = torch.cat([gy, gy * x], dim=2).mT  # [R, 2, N]: the bias's and the weight's
        g = torch.bmm(coef, slope) * w2.mT  # [R, 2, width]
        # w₂'s gradient hᵀ·gy as (gyᵀ·h)ᵀ: a row times h as stored, 2-3x faster on CPU than
        # reading h transposed (`benchmarks/README.md`, 2026-12-03).
        g2 = torch.bmm(gy.mT, h).mT
        return None, g[:, 1:2], g[:, 0:1], g2, gy.sum(dim=1, keepdim=True)


class ReplicaMLP(nn.Module):
    """An MLP of any depth, replica-batched: sizes = [n_in, hidden..., n_out].

    `residual` adds skip connections between consecutive hidden layers of equal size (the residual
    net of paper 003 B). σ-normalisation, when `sigma_inv` is given, applies to every layer.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        generators: Sequence[torch.Generator],
        *,
        activation: Activation = "tanh",
        sigma_inv: float | Sequence[float] | None = None,
        bias_norm: bool = True,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"`sizes` must have at least 2 entries, but got {list(sizes)}")
        self.replicas = len(generators)
        sigma = None
        if sigma_inv is not None:
            inv = torch.as_tensor(sigma_inv, dtype=torch.float32).expand(self.replicas)
            sigma = 1.0 / inv
        self.activation = ACTIVATIONS[activation]
        self.residual = residual
        last = len(sizes) - 2
        self.layers = nn.ModuleList(
            ReplicaLinear(
                n_in, n_out, generators, sigma=sigma, bias_norm=bias_norm, output_layer=i == last
            )
            for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]))
        )
        # 1 -> width -> 1 tanh (the sinusoid's net): `_TanhNet1D`'s hand-written backward.
        self.fused = (activation == "tanh" and len(sizes) == 3 and sizes[0] == sizes[2] == 1
                      and not residual)  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        if self.fused and not x.requires_grad:  # an input gradient (attacks) takes autograd's way
            first, last = self.layers
            w1, b1 = first.effective_weight(), first.effective_bias()[:, None]
            w2, b2 = last.effective_weight(), last.effective_bias()[:, None]
            return _TanhNet1D.apply(x, w1, b1, w2, b2)
        *hidden, out = self.layers
        for layer in hidden:
            h = self.activation(layer(x))
            x = x + h if self.residual and h.shape == x.shape else h
        return out(x)

    def effective_weights(self) -> list[Tensor]:
        """Each layer's weight as the forward pass uses it, [R, n_in, n_out]."""
        return [layer.effective_weight() for layer in self.layers]


def replica_generators(seeds: Sequence[int], stream: str) -> list[torch.Generator]:
    """One generator per replica and purpose ("data", "init", "batches"), independent streams.

    Deriving the stream from (seed, purpose) keeps, say, the data of seed 3 the same whether the
    model is wide or narrow, and whether the seed trains alone or among 16 replicas.
    """
    import numpy as np

    salt = int.from_bytes(stream.encode(), "little") % (2**31)
    return [
        torch.Generator().manual_seed(
            int(np.random.SeedSequence([int(s), salt]).generate_state(1, dtype=np.uint64)[0] >> 1)
        )
        for s in seeds
    ]


@dataclass(frozen=True)
class NetworkConfig(ExperimentConfig):
    """The architecture fields of every MLP experiment."""

    width: int = 1000
    """hidden units per layer"""
    depth: int = 1
    """hidden layers (1 = paper 000's two-layer network)"""
    activation: Activation = "tanh"
    """hidden non-linearity; tanh gives the GP correspondence, relu is the contrast"""
    normalise: bool = True
    """σ-normalise the weights (paper 000 eq. 7); false trains a plain MLP, ignoring sigma_inv"""
    sigma_inv: PerReplica[float] = 1.0
    """length scale σ⁻¹: weights are rescaled to std σ/√fan_in in every forward pass"""
    bias_norm: bool = True
    """normalise hidden biases and scale the output bias by σ, as paper 000's code does"""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.width >= 1, "width", ">= 1", self.width)
        require(self.depth >= 1, "depth", ">= 1", self.depth)
        require(all(v > 0 for v in self.each("sigma_inv")), "sigma_inv", "> 0", self.sigma_inv)

    def make_mlp(self, n_in: int, n_out: int, *, residual: bool = False) -> ReplicaMLP:
        """The replica-batched MLP this config describes, one initialisation per seed."""
        return ReplicaMLP(
            [n_in, *[self.width] * self.depth, n_out],
            replica_generators(self.seeds, "init"),
            activation=self.activation,
            sigma_inv=self.each("sigma_inv") if self.normalise else None,
            bias_norm=self.bias_norm,
            residual=residual,
        )
