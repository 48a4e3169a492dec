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

Choices the paper leaves open:
- data: f sampled at all of its knots (0, 1/32, …, 1) and 9 equally spaced points between each
  pair: 33 + 32·9 = 321 points, the same for every replica, full batch;
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
  distances from), with a Gaussian direction and L2 norm exactly `jitter` (paper: ≈ U[0, 2]).
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
from trainables.config import require
from trainables.data import Split
from trainables.nn import ReplicaMLP, replica_generators

Params = list[tuple[Tensor, Tensor]]  # per layer (W [..., n_in, n_out], b [..., n_out])

SAW_AMPLITUDE = 0.5
SAW_TEETH = 16  # T⁵ on [0, 1]
SPLINE_KNOTS = (0.0, 1 / 8, 2 / 8, 3 / 8, 4 / 8, 5 / 8, 6 / 8, 1.0)
SPLINE_VALUES = (0.0, 0.75, 1.0, 0.75, 0.0, -0.625, -1.0, 0.0)
OFFSET = 3.5  # keeps the running sum s_l positive on [0, 1]
BETWEEN = 9  # data points between consecutive knots


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
    momentum: float = 0.9
    """SGD momentum (ignored by Adadelta)"""
    jitter: float = 0.0
    """basin: L2 norm of the Gaussian noise added to the de-symmetrised W_f (paper: 0 to 2)"""
    found_mse: float = 1e-3
    """train MSE below which a fit counts as the global minimum (sawtooth found / returned)"""
    replicas: int = 16
    """restarts (or jitter directions) per trial, trained as one stacked model"""
    lr: float = 1e-3
    """learning rate (SGD is stable at W_f only below ≈ 3.4e-3; Adadelta's usual value is 1.0)"""
    lr_decay: float = 1.0
    steps: int = 50_000
    eval_every: int = 5_000

    objective: ClassVar[str] = "train_mse"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.width >= 1, "width", ">= 1", self.width)
        require(self.depth >= 1, "depth", ">= 1", self.depth)
        require(0 <= self.momentum < 1, "momentum", "in [0, 1)", self.momentum)
        require(self.jitter >= 0, "jitter", ">= 0", self.jitter)
        require(self.found_mse > 0, "found_mse", "> 0", self.found_mse)
        if self.mode == "basin":
            shape = (self.depth, self.width)
            require(shape == (5, 5), "depth, width", "5, 5 in basin mode (W_f is 5×5)", shape)

    @property
    def is_5x5(self) -> bool:
        return (self.depth, self.width) == (5, 5)

    @property
    def schedule(self) -> engine.Schedule:
        return engine.Schedule(
            steps=self.steps, lr=self.lr, lr_decay=self.lr_decay, decay_every=self.decay_every,
            eval_every=self.eval_every, optimizer=self.optimizer, momentum=self.momentum,
        )  # fmt: skip


# --- the target network W_f and the function f ----------------------------------------------------


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


def sawtooth(x: Tensor) -> Tensor:
    """The closed form of the left half: SAW_AMPLITUDE · T⁵(x), 16 teeth on [0, 1]."""
    return SAW_AMPLITUDE * (1 - (1 - 2 * torch.frac(SAW_TEETH * x)).abs())


def spline(x: Tensor) -> Tensor:
    """The closed form of the right half: linear interpolation of SPLINE_VALUES at SPLINE_KNOTS."""
    knots = torch.tensor(SPLINE_KNOTS, dtype=x.dtype, device=x.device)
    values = torch.tensor(SPLINE_VALUES, dtype=x.dtype, device=x.device)
    i = torch.searchsorted(knots, x.contiguous(), right=True).clamp(1, len(knots) - 1)
    t = (x - knots[i - 1]) / (knots[i] - knots[i - 1])
    return values[i - 1] + t * (values[i] - values[i - 1])


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


def make_data(cfg: Config) -> dict[str, Split]:
    """The training set, identical for every replica: x, y = f(x), each [R, M, 1] float32."""
    x = inputs()[:, None]
    y = sawtooth(x) + spline(x)
    rep = (cfg.replicas, 1, 1)
    return {"train": Split(x.float().repeat(rep), y.float().repeat(rep))}


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
    """Random inits (restarts) or the de-symmetrised W_f plus noise of L2 norm `jitter` (basin)."""
    gens = replica_generators(cfg.seeds, "init")
    model = ReplicaMLP([1, *[cfg.width] * cfg.depth, 1], gens, activation="relu")
    if cfg.mode == "basin":
        start = flatten(desymmetrise(target_network()))
        noise = torch.stack([torch.randn(start.shape, generator=g) for g in gens]).double()
        start = start + cfg.jitter * noise / noise.norm(dim=-1, keepdim=True)
        set_flat(model, start)
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
    model: ReplicaMLP, splits: Mapping[str, Split], cfg: Config, start: Tensor | None
) -> dict[str, Tensor]:
    train = splits["train"]
    metrics = fit_metrics(model(train.x), train.x, train.y, cfg.found_mse)
    mse = metrics["train_mse"]
    metrics["best_train_mse"] = mse.min().expand_as(mse)
    if cfg.is_5x5:
        form = flatten(desymmetrise([(w.cpu(), b.cpu()) for w, b in model_params(model)]))
        wf = flatten(desymmetrise(target_network()))
        metrics["dist_wf"] = (form - wf).norm(dim=-1)
        metrics["desym_norm"] = form.norm(dim=-1)
        if start is not None:
            metrics["init_dist_wf"] = start
    if cfg.mode == "basin":
        metrics["returned"] = metrics["found_high_freq"]
    return metrics


def initial_distance(model: ReplicaMLP) -> Tensor:
    """Per-replica distance of the starting point from W_f, both de-symmetrised."""
    form = flatten(desymmetrise(model_params(model)))
    return (form - flatten(desymmetrise(target_network()))).norm(dim=-1)


def run(
    config: Mapping[str, Any], report: engine.Reporter = engine.no_report, device: str | None = None
) -> dict[str, Any]:
    cfg = Config.from_mapping(config)
    model = make_model(cfg)
    start = initial_distance(model) if cfg.is_5x5 else None
    score = partial(evaluate, cfg=cfg, start=start)
    return engine.train_full_batch(cfg, model, make_data(cfg), engine.mse, score, report, device)
