"""W_f, paper 002's hand-built 5×5 ReLU network, and the weight-space tools around it.

Construction of W_f (the paper's Fig. 1 is a drawing without numbers; every number here is ours).
Domain x ∈ [0, 1]. Units 0–1 of each hidden layer (the "left 5×2") build the sawtooth by composing
the tent map T(t) = 2·relu(t) − 4·relu(t − ½), which maps [0, 1] onto itself:
  layer 1: p = relu(x), q = relu(x − ½); layers 2–5: p = relu(2p − 4q), q = relu(2p − 4q − ½);
  output: SAW_AMPLITUDE · (2p − 4q) = SAW_AMPLITUDE · T⁵(x), a triangle wave of 16 teeth
  (32 linear pieces, knots at k/32, values in [0, SAW_AMPLITUDE]).
Units 2–4 (the "right 5×3") build the spline m₀x + Σᵢ aᵢ·relu(x − kᵢ) with six hinges, one new
hinge per layer, and a running sum kept positive by an offset so relu passes it unchanged:
  c (carrier): c₁ = relu(x), c₂₋₄ = relu(c), c₅ = relu(c₄ − k₆);
  h (hinge):   h_l = relu(c_{l−1} − k_l)  (c₀ = x);
  s (sum):     s₁ = relu(OFFSET + m₀x), s_l = relu(s_{l−1} + a_{l−1}·h_{l−1});
  output: s₅ + a₅h₅ + a₆c₅ − OFFSET.
The spline interpolates SPLINE_VALUES at SPLINE_KNOTS (one period of a wave, knots on the k/32
grid), so every unit of W_f is used and f's knots are exactly {k/32}. W_f has 136 parameters.
f's closed forms, its constants and the training set live in `trainables.data.sawtooth`; W_f and
everything about weights live here; the experiment is `trainables.energy_landscape`.

De-symmetrisation (§3.3): see `desymmetrise`. `flatten` / `unflatten` / `set_flat` move between
per-layer parameters and one vector per replica (the space distances and Hessians live in).
"""

from __future__ import annotations

import torch
from torch import Tensor

from trainables.data.sawtooth import SAW_AMPLITUDE, SPLINE_KNOTS, SPLINE_VALUES
from trainables.nn import ReplicaMLP

Params = list[tuple[Tensor, Tensor]]  # per layer (W [..., n_in, n_out], b [..., n_out])

OFFSET = 3.5  # keeps W_f's running sum s_l positive on [0, 1]


def target_network() -> Params:
    """W_f as (W [n_in, n_out], b [n_out]) per layer, float64; see the module docstring."""
    knots = torch.tensor(SPLINE_KNOTS, dtype=torch.float64)
    slopes = torch.diff(torch.tensor(SPLINE_VALUES, dtype=torch.float64)) / torch.diff(knots)
    m0, hinge = slopes[0].item(), torch.diff(slopes).tolist()  # hinge[i] at knot k_{i+1}
    k = list(SPLINE_KNOTS[1:-1])
    p, q, c, h, s = range(5)
    layers: Params = []
    w, b = torch.zeros(1, 5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    w[0, [p, q, c, h]] = 1.0
    w[0, s] = m0
    b[q], b[h], b[s] = -0.5, -k[0], OFFSET
    layers.append((w, b))
    for layer in range(2, 6):  # hidden layers 2..5
        w, b = torch.zeros(5, 5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
        w[p, [p, q]], w[q, [p, q]] = 2.0, -4.0
        b[q] = -0.5
        w[c, c], w[c, h] = 1.0, 1.0
        b[h] = -k[layer - 1]
        w[s, s], w[h, s] = 1.0, hinge[layer - 2]
        if layer == 5:  # the carrier's last unit is the sixth hinge
            b[c] = -k[5]
        layers.append((w, b))
    w = torch.tensor([[2 * SAW_AMPLITUDE], [-4 * SAW_AMPLITUDE], [hinge[5]], [hinge[4]], [1.0]])
    layers.append((w.double(), torch.tensor([-OFFSET], dtype=torch.float64)))
    return layers


def network_output(params: Params, x: Tensor) -> Tensor:
    """A ReLU network's output; params may carry leading replica dims, x is [..., B, 1]."""
    *hidden, (w_out, b_out) = params
    for w, b in hidden:
        x = torch.relu(x @ w + b.unsqueeze(-2))
    return x @ w_out + b_out.unsqueeze(-2)


def desymmetrise(params: Params, tol: float = 1e-12, max_sweeps: int = 20_000) -> Params:
    """The paper's representative: norm-minimising unit rescaling, then units sorted by norm.

    Works on float64 copies; params may carry leading replica dims. The output computes the same
    function as the input (ReLU is positively homogeneous), and the map is idempotent.
    """
    ws = [w.detach().double().clone() for w, _ in params]
    bs = [b.detach().double().clone() for _, b in params]
    for _ in range(max_sweeps):
        worst = 0.0
        for i in range(len(ws) - 1):  # hidden layer i: incoming ws[i], bs[i]; outgoing ws[i + 1]
            a = ws[i].pow(2).sum(-2) + bs[i].pow(2)  # [..., n]
            o = ws[i + 1].pow(2).sum(-1)
            live = (a > 0) & (o > 0)  # else the limits of the rescaling: zero both sides
            c = torch.where(live, (o / a.where(live, 1.0)).pow(0.25), 0.0)
            ws[i], bs[i] = ws[i] * c.unsqueeze(-2), bs[i] * c
            ws[i + 1] = ws[i + 1] / c.where(live, 1.0).unsqueeze(-1) * live.unsqueeze(-1)
            c = c.where(live, 1.0)
            # a diverged replica (non-finite weights) must not stop the others' convergence
            worst = max(worst, c.log().abs().nan_to_num(0.0, 0.0, 0.0).max().item())
        if worst < tol:
            break
    for i in range(len(ws) - 1):
        by_bias = torch.argsort(bs[i], dim=-1, stable=True)
        norms = torch.take_along_dim(ws[i].norm(dim=-2), by_bias, dim=-1)
        order = torch.take_along_dim(by_bias, torch.argsort(norms, dim=-1, stable=True), dim=-1)
        ws[i] = torch.take_along_dim(ws[i], order.unsqueeze(-2), dim=-1)
        bs[i] = torch.take_along_dim(bs[i], order, dim=-1)
        ws[i + 1] = torch.take_along_dim(ws[i + 1], order.unsqueeze(-1), dim=-2)
    return list(zip(ws, bs))


def flatten(params: Params) -> Tensor:
    """All parameters as one vector per replica, [..., P] (P = 136 for a 5×5 network)."""
    return torch.cat([t for w, b in params for t in (w.flatten(-2), b)], dim=-1)


def unflatten(flat: Tensor, like: Params) -> Params:
    """The inverse of `flatten` for one replica: [P] -> layers shaped like `like`'s (no replica
    dims)."""
    out, i = [], 0
    for w, b in like:
        nw, nb = w.shape[-2:].numel(), b.shape[-1]
        out.append((flat[i : i + nw].view(w.shape[-2:]), flat[i + nw : i + nw + nb]))
        i += nw + nb
    return out


def model_params(model: ReplicaMLP) -> Params:
    return [(layer.weight, layer.bias) for layer in model.layers]


@torch.no_grad()
def set_flat(model: ReplicaMLP, flat: Tensor) -> None:
    """Copy a [R, P] parameter vector (the layout of `flatten`) into the model."""
    i = 0
    for layer in model.layers:
        for p in (layer.weight, layer.bias):
            n = p[0].numel()
            p.copy_(flat[:, i : i + n].reshape(p.shape))
            i += n
