"""The target of the energy-landscape paper (002, Gamst & Walker): f = sawtooth + spline on [0, 1].

f is the sum of a high-frequency part, SAW_AMPLITUDE · T⁵(x) (T the tent map, 16 teeth, knots at
k/32), and a low-frequency part, the linear interpolation of SPLINE_VALUES at SPLINE_KNOTS (one
period of a wave, its knots on the same k/32 grid). Both are closed forms here; the experiment
(`trainables.energy_landscape`) builds the 5×5 ReLU network W_f that computes f exactly, and its
tests check W_f's output against `target`.

The training set is f at all of its knots and BETWEEN equally spaced points between each pair
(33 + 32·9 = 321 points), the same for every replica: the paper fits the network's output, not a
sample, so there is nothing to seed.

Tooth k is x ∈ [k/16, (k+1)/16) (the last one closed at 1): 20 training points each (21 in the
last). `tooth_errors` reads a fit tooth by tooth: its MSE against f over a tooth relative to the
sawtooth's variance over that tooth, ≈ 0 where the fit has the tooth and ≈ 1 where it has only the
spline there (leaving a tooth out costs its variance).
"""

from __future__ import annotations

import torch
from torch import Tensor

from trainables.data import Split

SAW_AMPLITUDE = 0.5
SAW_TEETH = 16  # T⁵ on [0, 1]
SPLINE_KNOTS = (0.0, 1 / 8, 2 / 8, 3 / 8, 4 / 8, 5 / 8, 6 / 8, 1.0)
SPLINE_VALUES = (0.0, 0.75, 1.0, 0.75, 0.0, -0.625, -1.0, 0.0)
BETWEEN = 9  # data points between consecutive knots


def sawtooth(x: Tensor) -> Tensor:
    """The high-frequency part: SAW_AMPLITUDE · T⁵(x), 16 teeth on [0, 1]."""
    return SAW_AMPLITUDE * (1 - (1 - 2 * torch.frac(SAW_TEETH * x)).abs())


def spline(x: Tensor) -> Tensor:
    """The low-frequency part: linear interpolation of SPLINE_VALUES at SPLINE_KNOTS."""
    knots = torch.tensor(SPLINE_KNOTS, dtype=x.dtype, device=x.device)
    values = torch.tensor(SPLINE_VALUES, dtype=x.dtype, device=x.device)
    i = torch.searchsorted(knots, x.contiguous(), right=True).clamp(1, len(knots) - 1)
    t = (x - knots[i - 1]) / (knots[i] - knots[i - 1])
    return values[i - 1] + t * (values[i] - values[i - 1])


def tooth_index(x: Tensor) -> Tensor:
    """Which of the SAW_TEETH teeth each x ∈ [0, 1] lies in (x = 1 belongs to the last), long."""
    return (SAW_TEETH * x).floor().long().clamp(0, SAW_TEETH - 1)


def tooth_errors(pred: Tensor, x: Tensor) -> Tensor:
    """[R, SAW_TEETH]: per replica, each tooth's MSE of pred against f over the inputs x in it,
    relative to the sawtooth's variance over those inputs; pred and x are [R, M, 1]."""
    x = x.double().flatten(1)
    teeth = tooth_index(x)

    def tooth_mean(values: Tensor) -> Tensor:
        sums = torch.zeros(x.shape[0], SAW_TEETH, dtype=torch.float64, device=x.device)
        counts = torch.zeros_like(sums).scatter_add_(1, teeth, torch.ones_like(x))
        return sums.scatter_add_(1, teeth, values) / counts

    saw = sawtooth(x)
    var = tooth_mean(saw.pow(2)) - tooth_mean(saw).pow(2)
    return tooth_mean((pred.double().flatten(1) - target(x)).pow(2)) / var


def target(x: Tensor) -> Tensor:
    """f(x) = sawtooth(x) + spline(x)."""
    return sawtooth(x) + spline(x)


def knots() -> Tensor:
    """The knots of f on [0, 1]: the sawtooth's (k/32) and the spline's, sorted, float64."""
    saw = torch.arange(2 * SAW_TEETH + 1, dtype=torch.float64) / (2 * SAW_TEETH)
    return torch.unique(torch.cat([saw, torch.tensor(SPLINE_KNOTS, dtype=torch.float64)]))


def inputs() -> Tensor:
    """f's knots and BETWEEN equally spaced points between each consecutive pair, [M] float64."""
    kn = knots()
    frac = torch.arange(BETWEEN + 1, dtype=torch.float64) / (BETWEEN + 1)
    inner = (kn[:-1, None] + frac * torch.diff(kn)[:, None]).flatten()
    return torch.cat([inner, kn[-1:]])


def sawtooth_splits(replicas: int) -> dict[str, Split]:
    """The training set, identical for every replica: x, y = f(x), each [R, M, 1] float32."""
    x = inputs()[:, None]
    rep = (replicas, 1, 1)
    return {"train": Split(x.float().repeat(rep), target(x).float().repeat(rep))}
