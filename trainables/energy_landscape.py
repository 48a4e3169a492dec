"""Energy landscape of a 5×5 ReLU network (paper 002, Gamst & Walker, §2–3.4).

A hand-built 5×5 network W_f computes f = high-frequency sawtooth + low-frequency spline; networks
of the same architecture trained on f's output find only the spline (random `restarts`), and the
global minimum's basin is small: jitter W_f by Gaussian noise of L2 norm `jitter`, retrain, and see
whether it comes back (`basin`, §3.4). Restarts are replicas: one init (or jitter) per replica.

Target metric: train_mse (min). One run: `smoothsweep train energy_landscape --set steps=5000`
(basin: `--set mode=basin --set jitter=0.5 --set steps=20000`).

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
everything about weights (de-symmetrisation, distances) live here.

Choices the paper leaves open:
- data: f sampled at all of its knots (0, 1/32, …, 1) and 9 equally spaced points between each
  pair: 33 + 32·9 = 321 points, the same for every replica, full batch (`data.sawtooth`);
- initialisation: PyTorch's default U(±1/√fan_in) for weights and biases (`ReplicaMLP`);
- SGD lr 1e-3 with momentum 0.9 and no decay: the global minimum is a narrow valley (the top
  eigenvalue of the MSE Hessian at the de-symmetrised W_f is ≈ 1.1e3), so heavy-ball GD is stable
  there only for lr < 2(1 + momentum)/λ ≈ 3.4e-3, and at lr 1e-2 even an exact start drifts away;
  Adadelta with PyTorch's defaults (rho 0.9, eps 1e-6; Keras, which the paper likely used, has
  rho 0.95, eps 1e-7) and lr 1.0 drifts away from an exact start too (the paper: Adadelta's
  probability of returning is identically zero);
- de-symmetrisation (§3.3): per unit a positive rescaling (incoming weights and bias × c, outgoing
  weights ÷ c) minimising the L2 norm of all 136 parameters, found by exact coordinate descent
  (c⁴ = ‖out‖²/‖in‖², convex in log c, so the minimiser is the global one: every unit balanced);
  a unit with zero incoming weights and bias gets zero outgoing weights and vice versa (the limits
  of that rescaling; the function is unchanged). Then, layer by layer, units sorted by the L2 norm
  of their incoming weight column (ties by bias). Distances are L2 between such forms;
- "found the high-frequency part" / "returned to the global minimum": final train MSE below
  `found_mse`, a small fraction of SAW_AMPLITUDE²/12 ≈ 0.021, the MSE of the spline plus the
  sawtooth's mean (the best a fit without the teeth can do). `sawtooth_corr` is the correlation
  of (prediction − spline) with the centred sawtooth: ≈ 1 with the teeth, ≈ 0 without;
- basin: the noise is added to the de-symmetrised W_f (the representative the paper measures
  distances from), with a Gaussian direction and L2 norm exactly `jitter` (paper: ≈ U[0, 2]);
  a list gives each replica its own norm, so one trial can sweep the jitters the paper draws.
  `init_dist_wf` is the start's de-symmetrised distance: below `jitter` when re-balancing absorbs
  part of the noise, above it when the noise reorders units of near-equal norm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from trainables import engine
from trainables.config import PerReplica, require
from trainables.data import Split
from trainables.data.sawtooth import (
    SAW_AMPLITUDE,
    SPLINE_KNOTS,
    SPLINE_VALUES,
    sawtooth,
    sawtooth_splits,
    spline,
)
from trainables.nn import ReplicaMLP, replica_generators
from trainables.report import Metric, Reporter, declare, no_report

Params = list[tuple[Tensor, Tensor]]  # per layer (W [..., n_in, n_out], b [..., n_out])

OFFSET = 3.5  # keeps W_f's running sum s_l positive on [0, 1]


@dataclass(frozen=True)
class Config(engine.TrainingConfig):
    mode: Literal["restarts", "basin"] = "restarts"
    """restarts: random inits; basin: start from W_f jittered by noise of L2 norm `jitter`"""
    width: int = 5
    """N: units per hidden layer (W_f is 5×5; distances to it need width = depth = 5)"""
    depth: int = 5
    """K: hidden layers"""
    optimizer: Literal["sgd", "adadelta"] = "sgd"
    """full-batch gradient descent with momentum, or Adadelta (the paper runs both)"""
    jitter: PerReplica[float] = 0.0
    """basin: L2 norm of the Gaussian noise added to the de-symmetrised W_f (paper: 0 to 2)"""
    found_mse: float = 1e-3
    """train MSE below which a fit counts as the global minimum (sawtooth found / returned)"""
    replicas: int = 16
    """restarts (or jitter directions) per trial, trained as one stacked model"""
    # lr keeps the base's 1e-3: SGD is stable at W_f only below ≈ 3.4e-3 (Adadelta wants ≈ 1.0)
    lr_decay: float = 1.0  # no decay, as the paper
    steps: int = 50_000
    eval_every: int = 5_000

    objective: ClassVar[str] = "train_mse"
    DEFAULT_MOMENTUM: ClassVar[float] = 0.9  # heavy-ball SGD, as the paper

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.width >= 1, "width", ">= 1", self.width)
        require(self.depth >= 1, "depth", ">= 1", self.depth)
        require(all(v >= 0 for v in self.each("jitter")), "jitter", ">= 0", self.jitter)
        require(self.found_mse > 0, "found_mse", "> 0", self.found_mse)
        if self.mode == "basin":
            shape = (self.depth, self.width)
            require(shape == (5, 5), "depth, width", "5, 5 in basin mode (W_f is 5×5)", shape)

    @property
    def is_5x5(self) -> bool:
        return (self.depth, self.width) == (5, 5)

    def metrics(self) -> dict[str, Metric]:
        out = declare(minimise=["train_mse"], maximise=["found_high_freq", "sawtooth_corr"])
        if self.is_5x5:  # distances from W_f need its architecture
            out.update(declare(diagnostics=["dist_wf", "desym_norm", "init_dist_wf"]))
        if self.mode == "basin":
            out.update(declare(maximise=["returned"]))
        return out


# --- the target network W_f and its training set -------------------------------------------------


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


def make_data(cfg: Config) -> dict[str, Split]:
    """f at its knots and between them (`trainables.data.sawtooth`), the same for every replica."""
    return sawtooth_splits(cfg.replicas)


# --- de-symmetrisation ----------------------------------------------------------------------------


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


def model_params(model: ReplicaMLP) -> Params:
    return [(layer.weight, layer.bias) for layer in model.layers]


# --- model, metrics, run --------------------------------------------------------------------------


def make_model(cfg: Config) -> ReplicaMLP:
    """Random inits (restarts) or the de-symmetrised W_f plus noise (basin): replica r's noise has a
    Gaussian direction from its own seed and L2 norm `jitter` (its own, given one per replica)."""
    gens = replica_generators(cfg.seeds, "init")
    model = ReplicaMLP([1, *[cfg.width] * cfg.depth, 1], gens, activation="relu")
    if cfg.mode == "basin":
        start = flatten(desymmetrise(target_network()))
        noise = torch.stack([torch.randn(start.shape, generator=g) for g in gens]).double()
        norm = torch.tensor(cfg.each("jitter"), dtype=torch.float64)[:, None]
        set_flat(model, start + norm * noise / noise.norm(dim=-1, keepdim=True))
    return model


@torch.no_grad()
def set_flat(model: ReplicaMLP, flat: Tensor) -> None:
    """Copy a [R, P] parameter vector (the layout of `flatten`) into the model."""
    i = 0
    for layer in model.layers:
        for p in (layer.weight, layer.bias):
            n = p[0].numel()
            p.copy_(flat[:, i : i + n].reshape(p.shape))
            i += n


def fit_metrics(pred: Tensor, x: Tensor, y: Tensor, found_mse: float) -> dict[str, Tensor]:
    """Per-replica train MSE, whether the sawtooth was found, and how much of it is there."""
    mse = engine.mse(pred, y)
    saw = sawtooth(x.double())
    saw = (saw - saw.mean(dim=1, keepdim=True)).flatten(1)
    resid = (pred.double() - spline(x.double())).flatten(1)
    resid = resid - resid.mean(dim=1, keepdim=True)
    corr = (resid * saw).sum(1) / (resid.norm(dim=1) * saw.norm(dim=1)).clamp_min(1e-300)
    return {"train_mse": mse, "found_high_freq": (mse < found_mse).double(), "sawtooth_corr": corr}


@torch.no_grad()
def evaluate(
    model: ReplicaMLP, data: engine.Data, *, cfg: Config, start: Tensor | None
) -> engine.Measured:
    """The fit on the training set; with W_f's architecture, the distances from it (`start`: the
    initial one, measured when the task was built)."""
    train = data["train"]
    metrics = fit_metrics(model(train.x), train.x, train.y, cfg.found_mse)
    if start is not None:
        form = flatten(desymmetrise([(w.cpu(), b.cpu()) for w, b in model_params(model)]))
        wf = flatten(desymmetrise(target_network()))
        metrics["dist_wf"] = (form - wf).norm(dim=-1)
        metrics["desym_norm"] = form.norm(dim=-1)
        metrics["init_dist_wf"] = start
    if cfg.mode == "basin":
        metrics["returned"] = metrics["found_high_freq"]
    return metrics


def initial_distance(model: ReplicaMLP) -> Tensor:
    """Per-replica distance of the starting point from W_f, both de-symmetrised."""
    form = flatten(desymmetrise(model_params(model)))
    return (form - flatten(desymmetrise(target_network()))).norm(dim=-1)


def make_task(cfg: Config) -> engine.Task:
    model = make_model(cfg)
    start = initial_distance(model) if cfg.is_5x5 else None
    score = partial(evaluate, cfg=cfg, start=start)
    return engine.Task(model, make_data(cfg), engine.mse, score)


def run(
    config: Mapping[str, Any], report: Reporter = no_report, device: str | None = None
) -> dict[str, Any]:
    cfg = Config.from_mapping(config)
    return engine.run(cfg, make_task(cfg), report, device)
