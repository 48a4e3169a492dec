"""Energy landscape of a 5×5 ReLU network (paper 002, Gamst & Walker, §2–3.5).

A hand-built 5×5 network W_f computes f = high-frequency sawtooth + low-frequency spline; networks
of the same architecture trained on f's output find only the spline (random `restarts`), and the
global minimum's basin is small: jitter W_f by Gaussian noise of L2 norm `jitter`, retrain, and see
whether it comes back (`basin`, §3.4). Restarts are replicas: one init (or jitter) per replica.

What a trial reports. Per replica (the mean is the trial's number): `found_high_freq` (the fit has
all 16 teeth: its mean is the fraction of restarts that found the sawtooth), `teeth`, `collapsed`
(the fraction that ended a constant), `sawtooth_corr`, `train_mse`, the distances from W_f and, at
the end, the train-MSE Hessian's `hess_min`, `hess_max`, `hess_neg` and `grad_norm` (§3.5). Over
the restarts, at the end: `train_mse_{q10,median,q90}` and `dist_wf_{q10,median,q90}` (restarts
mode). Plots: `restart_fits` (mean ± std of the fits and the best one, Figs. 2–3); in basin mode
`basin_return` (fraction returned and teeth kept against the jitter) and `basin_loss` (Fig. 5).

Target metric: train_mse_median (min; basin: returned, max). One run: `smoothsweep train
energy_landscape --set replicas=64` (64 restarts, the paper's 20K steps: ≈ 70 s on one core); basin:
`--set mode=basin --set 'jitter=[0, 0.125, 0.25, 0.5, 1, 2]' --set replicas=6
--artifacts DIR` (≈ 20 s).

W_f's construction (every number ours: the paper's Fig. 1 is a drawing without numbers), the
de-symmetrisation and the flat parameter layout are in `trainables.sawtooth_net`.

Choices the paper leaves open:
- data: f sampled at all of its knots (0, 1/32, …, 1) and 9 equally spaced points between each
  pair: 33 + 32·9 = 321 points, the same for every replica, full batch (`data.sawtooth`);
- initialisation: PyTorch's default U(±1/√fan_in) for weights and biases (`ReplicaMLP`). With it
  about one 5×5 net in five is dead on [0, 1] from the start (12 of seeds 0–63 output a constant),
  and those are the restarts that end `collapsed` (13 of 64 with SGD at 50K steps, MSE 0.441 = the
  variance of f): they are a property of the init, not of the landscape the paper describes;
- SGD lr 1e-3 with momentum 0.9 and no decay: the global minimum is a narrow valley (the top
  eigenvalue of the MSE Hessian at the de-symmetrised W_f is ≈ 1.1e3), so heavy-ball GD is stable
  there only for lr < 2(1 + momentum)/λ ≈ 3.4e-3, and at lr 1e-2 even an exact start drifts away.
  lr 3e-3 is no faster way back: its first steps throw jittered starts further out (jitter 0.5,
  16 directions: 10 lose every tooth at lr 3e-3 in 20K steps, none at lr 1e-3 in 60K);
- Adadelta: the paper does not name its framework; 2017 and "Adadelta" point to Keras, whose
  update is torch's (epsilon inside both square roots) with other defaults. `adadelta` has
  torch's (rho 0.9, eps 1e-6), `adadelta_keras` Keras 2.0's (rho 0.95, eps 1e-8; lr 1.0, its
  default then, is the caller's `lr`), see `trainables.optim`. Either leaves an exact start: as
  the gradient vanishes the step tends to lr·g (√(d+ε)/√(a+ε) → 1, Zeiler §4.3), and lr 1.0 is far
  above GD's 2/λ. In 20K steps from W_f torch's defaults end at MSE 1.4e-2 and distance 8, Keras's
  at 5.9e-3 and distance 1.6: "hovering around" a minimum, as the paper says (§3.4);
- de-symmetrisation (§3.3): per unit a positive rescaling (incoming weights and bias × c, outgoing
  weights ÷ c) minimising the L2 norm of all 136 parameters, found by exact coordinate descent
  (c⁴ = ‖out‖²/‖in‖², convex in log c, so the minimiser is the global one: every unit balanced);
  a unit with zero incoming weights and bias gets zero outgoing weights and vice versa (the limits
  of that rescaling; the function is unchanged). Then, layer by layer, units sorted by the L2 norm
  of their incoming weight column (ties by bias). Distances are L2 between such forms;
- "found the high-frequency part" / "returned to the global minimum" are read in function space,
  tooth by tooth (`data.sawtooth.tooth_errors`): a tooth is fitted when the fit's MSE over it is
  below `tooth_tol` (½) of the sawtooth's variance there, which is what leaving it out costs;
  found / returned = all 16 teeth. The paper's Figs. 2–3 say a fit "finds" the high-frequency
  component when the teeth are there; a count also says how many (restarts: 0 of 16). Leaving
  one tooth out costs SAW_AMPLITUDE²/12/16 ≈ 1.3e-3 of MSE (the no-teeth floor over 16), so the
  former cut-off, MSE < 1e-3, said nearly the same thing: in the basin runs (SGD, lr 1e-3, 8
  directions per jitter, 20K steps) both give 1, .75, .38 at jitter 0, 0.125, 0.25 and 0 from
  0.5, but for one start at 0.375 that has every tooth and an MSE still falling. Starts split
  early: they keep every tooth (worst tooth < 0.5) and their MSE falls on (to 1e-6–1e-7, or
  slowly: 3.8e-3 → 9.9e-4 over 60K steps), or they lose a tooth (its error ≈ its variance) and
  plateau at ≥ 1.3e-3. 60K steps change the fractions little (0.25: 6 of 16 against 5 of 16 by
  the MSE cut-off). Distance is no criterion: returning starts drift from W_f's form (0.2 → 1.3)
  because the global minima are more than W_f's symmetry orbit (units active on all of [0, 1]
  make linear blocks that can be re-mixed). So this W_f's basin has radius ≈ 0.25 (half return),
  not the paper's ≈ 2: its W_f has other numbers (Fig. 1 gives none), and the basin is the
  construction's. `sawtooth_corr` is the correlation of (prediction − spline) with the centred
  sawtooth: ≈ 1 with the teeth, ≈ 0 without;
- collapsed: the prediction's range over the data below COLLAPSE_RTOL (1%) of f's. Live fits end
  with ranges ≥ 1.3 (f's is 2.44), dead ones at 0 or ~1e-3 (a unit alive on a sliver of [0, 1]).
  Every net is that flat at initialisation (ranges 0–0.02), so the number means "collapsed" only
  once training has had time to grow the output, i.e. in the final report;
- the statistics over restarts: q10 / median / q90 (torch's linear interpolation; a diverged
  replica left out), each taken over the replicas with the same hyperparameters as the replica
  (every per-replica field but the seed: `peer_groups`), and repeated in each of their `/rK`, so
  a trial's plain value is the statistic itself. The engine hands a Task neither the trial's rows
  nor a pack's groups; grouping by hyperparameters keeps a pack's trials apart unless two have
  the very same ones, and then pools draws of the same distribution. A single trial given an lr
  per replica gets per-lr quantiles, and its plain value is their mean;
- the Hessian (`trainables.hessian`): exact, float64, of the full-batch train MSE w.r.t. all
  parameters, with torch's relu'(0) = 0 at a kink (W_f's units sit exactly at kinks on data
  points). `hess_neg` counts λ < −1e-6·max|λ|: float64 rounding is far below, W_f (whose float32
  copy has MSE ~1e-12) counts 0. SGD's 50K-step restarts are not strict minima: 10–25 directions
  of curvature ≈ −1e-3 and gradients ≈ 5e-3 (`grad_norm`), mostly outside the rescaling
  directions — the paper's "flat, slightly bumpy" plains, still descending;
- basin: the noise is added to the de-symmetrised W_f (the representative the paper measures
  distances from), with a Gaussian direction and L2 norm exactly `jitter` (paper: ≈ U[0, 2]);
  a list gives each replica its own norm, so one trial can sweep the jitters the paper draws, and
  the plots group the replicas by jitter (over those sharing every other hyperparameter).
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

from trainables import artifacts, engine, hessian
from trainables.config import PerReplica, require
from trainables.data import Split
from trainables.data.sawtooth import (
    SAW_TEETH,
    sawtooth,
    sawtooth_splits,
    spline,
    target,
    tooth_errors,
)
from trainables.nn import ReplicaMLP, replica_generators
from trainables.report import Metric, Reporter, declare, no_report
from trainables.sawtooth_net import (
    desymmetrise,
    flatten,
    model_params,
    network_output,
    set_flat,
    target_network,
    unflatten,
)

COLLAPSE_RTOL = 1e-2  # collapsed: the prediction's range over the data below 1% of f's range
QUANTILES = {"q10": 0.1, "median": 0.5, "q90": 0.9}  # of train_mse and dist_wf over the restarts
HESSIAN_CHUNK = 64  # replicas per vmapped Hessian: bounds memory at the paper's 1000 replicas


@dataclass(frozen=True)
class Config(engine.TrainingConfig):
    mode: Literal["restarts", "basin"] = "restarts"
    """restarts: random inits; basin: start from W_f jittered by noise of L2 norm `jitter`"""
    width: int = 5
    """N: units per hidden layer (W_f is 5×5; distances to it need width = depth = 5)"""
    depth: int = 5
    """K: hidden layers"""
    optimizer: Literal["sgd", "adadelta", "adadelta_keras"] = "sgd"
    """GD with momentum, or Adadelta with torch's or Keras 2.0's defaults (Keras's wants lr 1.0)"""
    jitter: PerReplica[float] = 0.0
    """basin: L2 norm of the Gaussian noise added to the de-symmetrised W_f (paper: 0 to 2)"""
    tooth_tol: float = 0.5
    """a tooth is fitted when the fit's MSE over it is below this × the sawtooth's variance there"""
    replicas: int = 16
    """restarts (or jitter directions) per trial, trained as one stacked model"""
    # lr keeps the base's 1e-3: SGD is stable at W_f only below ≈ 3.4e-3 (Adadelta wants ≈ 1.0)
    lr_decay: float = 1.0  # no decay, as the paper
    steps: int = 20_000  # §3.4: "trained for 20K batches, just as with our main experiment"
    eval_every: int = 5_000

    objective: ClassVar[str] = "train_mse_median"  # the typical restart, not a mean with collapses
    DEFAULT_MOMENTUM: ClassVar[float] = 0.9  # heavy-ball SGD, as the paper

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.width >= 1, "width", ">= 1", self.width)
        require(self.depth >= 1, "depth", ">= 1", self.depth)
        require(all(v >= 0 for v in self.each("jitter")), "jitter", ">= 0", self.jitter)
        # a missing tooth scores ≈ 1: a tolerance of 1 or more would count it as fitted
        require(0 < self.tooth_tol < 1, "tooth_tol", "in (0, 1)", self.tooth_tol)
        if self.mode == "basin":
            shape = (self.depth, self.width)
            require(shape == (5, 5), "depth, width", "5, 5 in basin mode (W_f is 5×5)", shape)

    @property
    def is_5x5(self) -> bool:
        return (self.depth, self.width) == (5, 5)

    def metrics(self) -> dict[str, Metric]:
        fit = ["found_high_freq", "teeth", "sawtooth_corr"]
        out = declare(minimise=["train_mse", "collapsed"], maximise=fit)
        curvature = ["hess_min", "hess_max", "hess_neg", "grad_norm"]
        out.update(declare(diagnostics=curvature, final=True))
        if self.is_5x5:  # distances from W_f need its architecture
            out.update(declare(diagnostics=["dist_wf", "desym_norm", "init_dist_wf"]))
        if self.mode == "basin":  # per jitter, the plots say more than quantiles would
            out.update(declare(maximise=["returned"]))
        else:
            out.update(declare(minimise=quantile_names("train_mse"), final=True))
            if self.is_5x5:
                out.update(declare(diagnostics=quantile_names("dist_wf"), final=True))
        return out


def quantile_names(metric: str) -> list[str]:
    return [f"{metric}_{q}" for q in QUANTILES]


def make_data(cfg: Config) -> dict[str, Split]:
    """f at its knots and between them (`trainables.data.sawtooth`), the same for every replica."""
    return sawtooth_splits(cfg.replicas)


# --- the training set, model, per-replica metrics ------------------------------------------------


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


def fit_metrics(pred: Tensor, x: Tensor, y: Tensor, tooth_tol: float) -> dict[str, Tensor]:
    """Per replica: train MSE; how many of f's teeth the fit has and whether it has all of them;
    how sawtooth-shaped (prediction − spline) is; whether the prediction is a constant."""
    mse = engine.mse(pred, y)
    teeth = (tooth_errors(pred, x) < tooth_tol).sum(dim=1).double()
    saw = sawtooth(x.double())
    saw = (saw - saw.mean(dim=1, keepdim=True)).flatten(1)
    resid = (pred.double() - spline(x.double())).flatten(1)
    resid = resid - resid.mean(dim=1, keepdim=True)
    corr = (resid * saw).sum(1) / (resid.norm(dim=1) * saw.norm(dim=1)).clamp_min(1e-300)
    span = (pred.amax(dim=1) - pred.amin(dim=1)).flatten()
    collapsed = span < COLLAPSE_RTOL * (y.amax(dim=1) - y.amin(dim=1)).flatten()
    return {
        "train_mse": mse,
        "found_high_freq": (teeth == SAW_TEETH).double(),
        "teeth": teeth,
        "sawtooth_corr": corr,
        "collapsed": collapsed.double(),
    }


def distances(model: ReplicaMLP) -> dict[str, Tensor]:
    """Per-replica distance from W_f and norm, both de-symmetrised (on the CPU, float64)."""
    form = flatten(desymmetrise([(w.cpu(), b.cpu()) for w, b in model_params(model)]))
    wf = flatten(desymmetrise(target_network()))
    return {"dist_wf": (form - wf).norm(dim=-1), "desym_norm": form.norm(dim=-1)}


@torch.no_grad()
def evaluate(
    model: ReplicaMLP, data: engine.Data, *, cfg: Config, start: Tensor | None
) -> engine.Measured:
    """The fit on the training set; with W_f's architecture, the distances from it (`start`: the
    initial one, measured when the task was built)."""
    train = data["train"]
    metrics = fit_metrics(model(train.x), train.x, train.y, cfg.tooth_tol)
    if start is not None:
        metrics.update(distances(model), init_dist_wf=start)
    if cfg.mode == "basin":  # back at the global minimum: the fit has every tooth again
        metrics["returned"] = metrics["found_high_freq"]
    return metrics


def initial_distance(model: ReplicaMLP) -> Tensor:
    """Per-replica distance of the starting point from W_f, both de-symmetrised."""
    return distances(model)["dist_wf"]


# --- the final evaluation: curvature, and the restarts as a population ----------------------------


def curvature(model: ReplicaMLP, data: engine.Data) -> engine.Measured:
    """Per replica: the extremes of the spectrum of the train-MSE Hessian w.r.t. all parameters,
    its count of negative eigenvalues (`hessian.NEG_RTOL`) and the gradient's norm, float64."""
    params = [(w.detach(), b.detach()) for w, b in model_params(model)]
    one = [(w[0], b[0]) for w, b in params]

    def loss(flat: Tensor, x: Tensor, y: Tensor) -> Tensor:
        return (network_output(unflatten(flat, one), x) - y).pow(2).mean()

    args = (flatten(params), data["train"].x, data["train"].y)
    h = hessian.hessians(loss, *args, chunk=HESSIAN_CHUNK)
    grad = hessian.gradients(loss, *args, chunk=HESSIAN_CHUNK)
    return {**hessian.spectrum_metrics(h), "grad_norm": grad.norm(dim=-1)}


def peer_groups(cfg: Config, besides: tuple[str, ...] = ("seed",)) -> Tensor:
    """[R] group ids: replicas share a group when every per-replica field but `besides` is equal.

    The engine tells a Task neither a trial's replicas nor a pack's groups, so a statistic over
    restarts is taken over the replicas trained with the same hyperparameters: a trial's own
    restarts, and in a pack those of another trial only if it has the very same hyperparameters
    (draws from the same distribution, so pooling them is sound).
    """
    fields = [f for f in cfg.per_replica_fields() if f not in besides]
    keys = list(zip(*(cfg.each(f) for f in fields))) if fields else [()] * cfg.replicas
    ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    return torch.tensor([ids[k] for k in keys])


def peers(cfg: Config, replica: int, besides: tuple[str, ...] = ("seed",)) -> Tensor:
    """The replicas in `replica`'s group (`peer_groups`), as indices."""
    groups = peer_groups(cfg, besides)
    return (groups == groups[replica]).nonzero().flatten()


def pooled_quantiles(values: Tensor, groups: Tensor, name: str) -> engine.Measured:
    """Each replica gets QUANTILES of `values` over its group (so each group's mean is its
    quantile); a non-finite value (a diverged replica) is left out."""
    values = values.detach().double().cpu()
    values = values.where(values.isfinite(), torch.nan)
    q = torch.tensor(list(QUANTILES.values()), dtype=torch.float64)
    out = torch.empty(len(q), len(values), dtype=torch.float64)
    for g in groups.unique():
        rows = groups == g
        out[:, rows] = torch.nanquantile(values[rows], q)[:, None]
    return {f"{name}_{k}": out[i] for i, k in enumerate(QUANTILES)}


def final_evaluate(
    model: ReplicaMLP, data: engine.Data, *, cfg: Config, groups: Tensor
) -> engine.Measured:
    """The Hessian spectrum; for restarts, the quantiles of the final MSE and distance."""
    out = curvature(model, data)
    if cfg.mode == "restarts":
        train = data["train"]
        with torch.no_grad():
            out.update(pooled_quantiles(engine.mse(model(train.x), train.y), groups, "train_mse"))
            if cfg.is_5x5:
                out.update(pooled_quantiles(distances(model)["dist_wf"], groups, "dist_wf"))
    return out


@torch.no_grad()
def plots(
    model: ReplicaMLP, data: engine.Data, final: engine.Measured, replica: int, *, cfg: Config
) -> dict[str, Any]:
    """Restarts: the fits of the replica's peers (their mean ± std and the best, Fig. 2–3).
    Basin: the fraction returned and teeth kept against the jitter (Fig. 5), and each final MSE."""
    if cfg.mode == "basin":
        return basin_plots(final, peers(cfg, replica, ("seed", "jitter")), cfg)
    rows = peers(cfg, replica)
    train = data["train"]
    x = train.x[0, :, 0].double().cpu()
    pred = model(train.x).double().cpu()[rows, :, 0]
    best = final["train_mse"].double().cpu()[rows].argmin()
    mean, std = pred.mean(dim=0), pred.std(dim=0, correction=0)
    series = {"f": (x, target(x)), "mean fit": (x, mean), "mean ± std": (x, mean + std),
              "mean − std": (x, mean - std), "best fit": (x, pred[best])}  # fmt: skip
    title = f"{len(rows)} restarts ({cfg.optimizer})"
    bands = {"mean fit": 1, "mean ± std": 1, "mean − std": 1}  # one colour: the mean and its band
    return {"restart_fits": artifacts.curves(series, title=title, dashed=["mean ± std",
            "mean − std"], colors={"f": 0, **bands, "best fit": 2})}  # fmt: skip


def basin_plots(final: engine.Measured, rows: Tensor, cfg: Config) -> dict[str, Any]:
    """Per jitter value, the fraction of the rows that returned and their mean share of teeth."""
    jitter = torch.tensor(cfg.each("jitter"), dtype=torch.float64)[rows]
    returned, teeth, mse = (
        final[k].double().cpu()[rows] for k in ("returned", "teeth", "train_mse")
    )
    levels = jitter.unique()  # sorted
    by = [jitter == j for j in levels]
    curve = {
        "returned": (levels, [returned[m].mean() for m in by]),
        "teeth kept / 16": (levels, [teeth[m].mean() / SAW_TEETH for m in by]),
    }
    return {
        "basin_return": artifacts.curves(
            curve, title=f"return to W_f ({cfg.optimizer}, {cfg.steps} steps)",
            x_label="jitter (L2 norm of the noise)", y_label="fraction", markers=list(curve),
        ),
        "basin_loss": artifacts.curves(
            {"final train MSE": (jitter, mse.clamp_min(1e-300).log10())},
            title="final loss against the noise (Fig. 5)", x_label="jitter (L2 norm of the noise)",
            y_label="log10 train MSE", markers=["final train MSE"],
        ),
    }  # fmt: skip


# --- the task -------------------------------------------------------------------------------------


def make_task(cfg: Config) -> engine.Task:
    model = make_model(cfg)
    start = initial_distance(model) if cfg.is_5x5 else None
    return engine.Task(
        model,
        make_data(cfg),
        engine.mse,
        partial(evaluate, cfg=cfg, start=start),
        final_evaluate=partial(final_evaluate, cfg=cfg, groups=peer_groups(cfg)),
        artifacts=partial(plots, cfg=cfg),
    )


def run(
    config: Mapping[str, Any], report: Reporter = no_report, device: str | None = None
) -> dict[str, Any]:
    cfg = Config.from_mapping(config)
    return engine.run(cfg, make_task(cfg), report, device)
