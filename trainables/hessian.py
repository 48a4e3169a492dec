"""Exact Hessians of a per-replica loss with respect to all parameters, and their spectra.

Paper 002 (§3.5) reads the energy landscape through "the eigenvalues of the energy Hessian at all
minima". A small network (136 parameters for the 5×5 net) makes the exact Hessian cheap: forward-
over-reverse autodiff (`torch.func.hessian`) of a loss of one flat parameter vector, vmapped over
the replicas, in float64 so that rounding sits far below any curvature worth reporting.

For ReLU networks the Hessian is taken with torch's convention relu'(0) = 0 at a kink; it is the
Hessian of the piecewise-quadratic piece the point lies on (or on the boundary of).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# Counted as negative: λ < −NEG_RTOL · max|λ|. A float64 eigensolver is accurate to ~1e-15·‖H‖,
# so rounding never crosses this line; what crosses it is real negative curvature, including the
# O(‖∇L‖) curvature a not-quite-converged point has along its flat (rescaling) directions.
NEG_RTOL = 1e-6


def hessians(
    loss: Callable[..., Tensor], flat: Tensor, *args: Tensor, chunk: int | None = None
) -> Tensor:
    """[R, P, P]: the Hessian of loss(flat[r], *(a[r] for a in args)) for every replica r.

    `loss` maps one replica's flat parameter vector [P] (and its slices of args) to a scalar.
    Computed in float64 whatever the inputs' dtype; `chunk` replicas at a time bound the memory.
    """
    return _per_replica(torch.func.hessian(loss), flat, args, chunk)


def gradients(
    loss: Callable[..., Tensor], flat: Tensor, *args: Tensor, chunk: int | None = None
) -> Tensor:
    """[R, P]: the gradient of the same per-replica loss, float64."""
    return _per_replica(torch.func.grad(loss), flat, args, chunk)


def _per_replica(
    fn: Callable[..., Tensor], flat: Tensor, args: tuple[Tensor, ...], chunk: int | None
) -> Tensor:
    inputs = (flat, *args)
    return torch.func.vmap(fn, chunk_size=chunk)(*(t.detach().double() for t in inputs))


def spectrum_metrics(h: Tensor, rtol: float = NEG_RTOL) -> dict[str, Tensor]:
    """Per-replica extremes of the spectrum of symmetric [R, P, P] Hessians, and how many
    eigenvalues are negative beyond `rtol` of the largest modulus (see NEG_RTOL)."""
    eig = torch.linalg.eigvalsh(h)  # ascending
    scale = eig.abs().amax(dim=-1, keepdim=True)
    return {
        "hess_min": eig[..., 0],
        "hess_max": eig[..., -1],
        "hess_neg": (eig < -rtol * scale).sum(dim=-1).double(),
    }
