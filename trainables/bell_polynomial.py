"""Hierarchical vs scrambled polynomial (paper 003 part B): a residual ReLU net learning B6 or B̃6.

The target is the sixth complete Bell polynomial B6(x1, …, x6), whose monomials are built
hierarchically (B_{n+1} = Σ_k C(n, k) B_{n-k} x_{k+1}), or a scrambled counterpart B̃6 with the same
coefficients and monomial shapes but the variables of each monomial permuted (both in
`trainables.data.polynomials`). The model is a fully-connected residual network: 6 → 8 hidden
layers of 50 → 1, ReLU after every hidden layer, a skip connection around every hidden layer whose
input has its size (the 7 layers 50 → 50; the first, 6 → 50, has none). Inputs are U[0, 2]^6;
Adam with a tuned learning rate, batch 20. Metrics: train_mse (on a fixed subsample of the training
set) and test_mse, and each over its split's target variance (train_nmse, test_nmse);
`sweep_curves` computes the per-variable sweeps of the paper's step 6-7 (model vs target along
each x_i).

Target metric: test_mse. One run: `smoothsweep train bell_polynomial --set polynomial=scrambled`.

Choices the paper leaves open, and what we do:
- B6 as printed in the paper has a typo: it lists 15·x3² and 10·x3², where the complete Bell
  polynomial has 15·x2³ and 10·x3² (the coefficients sum to the Bell number 203 either way). We
  use the correct B6; the tests derive it from the recurrence.
- The scramble: monomial i gets a permutation σ_i of the six variable indices and x_j becomes
  x_σi(j) (permuting positions inside a product would change nothing, by commutativity). The
  paper's rules, as we read them: every variable of the monomial is replaced by a different one
  (σ_i(j) ≠ j for each x_j in it), and the monomial does change (so 45·x1²x2² may not just swap
  x1 and x2); no two monomials share a σ_i (as permutations of all six indices); no two scrambled
  monomials are equal up to commutativity (equal exponent vectors), which in practice constrains
  only the shapes of 15·x4x2 and 6·x5x1; and B̃6 depends on all six variables. σ_i are drawn in
  turn for each monomial by rejection from `random.Random(scramble_seed)`
  (`polynomials.scramble_permutations`), so a scramble is a pure function of its seed, and the
  same for every replica (`scramble_seed` is a field apart from `seed`, which drives data and
  initialisation).
- "9 layers (1 input, 8 hidden, 1 output)" is read as 9 linear maps: 6 → 50, seven 50 → 50 and
  50 → 1, i.e. 8 hidden layers of 50 units; PyTorch's default initialisation.
- Mini-batches are drawn uniformly with replacement (`engine.Minibatches`), so an "epoch" is
  train_points / batch_size steps: steps = ceil(epochs · train_points / batch_size), unless
  `steps` is set, which wins over epochs. Evaluations come once per epoch (and at the last step)
  unless eval_every is set. The learning rate is constant by default.
- train_mse is measured on the first train_eval_points training points (a fixed subsample): the
  full training set at every evaluation costs as much as the test set and says little more.
- The paper reports plain MSEs and normalises nothing. We add {train,test}_nmse = MSE / Var(y)
  over the same split's targets (population variance, per replica), as `teacher_student` does for
  test_nmse: 1 is the error of predicting the mean, and B6 and B̃6, whose targets spread
  differently (permuting variables keeps each monomial's law but not how monomials co-vary),
  compare on one scale. The variance is the split's own: the test set's for test_nmse, the
  train_eval subsample's for train_nmse.
- The paper draws one base point per sweep and suggests averaging several (step 7): `sweep_curves`
  takes any number of base points and returns their mean curves and mean absolute error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor

from trainables import artifacts, engine
from trainables.config import require
from trainables.data import Split, stack
from trainables.data.polynomials import (
    INPUT_HIGH,
    VARIABLES,
    Monomial,
    Polynomial,
    evaluate_polynomial,
    inputs,
    monomials_for,
    sample,
)
from trainables.nn import Activation, NetworkConfig, ReplicaMLP, replica_generators
from trainables.report import Metric, Reporter, declare, no_report


@dataclass(frozen=True)
class Config(NetworkConfig, engine.TrainingConfig):
    width: int = 50
    """hidden units per layer (paper: 50)"""
    depth: int = 8
    """hidden layers (paper: 8, i.e. 9 linear maps)"""
    activation: Activation = "relu"
    """hidden non-linearity (paper: ReLU)"""
    normalise: bool = False
    """σ-normalise the weights (paper 000 eq. 7); the paper's net is plain"""
    residual: bool = True
    """skip connections around hidden layers whose input has their size (paper: yes)"""
    polynomial: Polynomial = "bell"
    """target: "bell" is B6, "scrambled" is B̃6 (same monomial shapes, variables permuted)"""
    scramble_seed: int = 0
    """seed of B̃6's permutations: one fixed polynomial for every replica"""
    train_points: int = 100_000
    """training points per replica (paper: at least 1e5)"""
    test_points: int = 60_000
    """test points per replica (paper: at least 6e4)"""
    train_eval_points: int = 10_000
    """training points (the first ones) on which train_mse is measured"""
    batch_size: int = 20
    """points per step (paper: B = 20)"""
    epochs: int = 30
    """passes over the training set, in expectation (paper: at least 30); sets the steps"""
    lr_decay: float = 1.0
    """multiply the learning rate by this every decay_every steps (1: constant, the default)"""
    decay_every: int = 5000
    """steps between learning-rate decays"""
    steps: int | None = None
    """optimizer steps; none: ceil(epochs × train_points / batch_size) (a set value wins)"""
    eval_every: int | None = None
    """steps between evaluations; none: once per epoch"""

    def __post_init__(self) -> None:
        # Before the bases' checks: those read num_steps and eval_period, derived from these.
        for name in ("train_points", "test_points", "train_eval_points", "batch_size", "epochs"):
            require(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))
        super().__post_init__()

    def metrics(self) -> dict[str, Metric]:
        return declare(minimise=["train_mse", "test_mse", "train_nmse", "test_nmse"])

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.train_points / self.batch_size)

    @property
    def num_steps(self) -> int:
        if self.steps is not None:
            return self.steps
        return math.ceil(self.epochs * self.train_points / self.batch_size)

    @property
    def eval_period(self) -> int:
        return self.steps_per_epoch if self.eval_every is None else self.eval_every


# --- data, model, metrics -------------------------------------------------------------------------


def make_data(cfg: Config) -> dict[str, Split]:
    """Train, train_eval (the first train_eval_points) and test splits, x [R, N, 6], y [R, N, 1]."""
    gens = replica_generators(cfg.seeds, "data")
    sampler = partial(sample, monomials=monomials_for(cfg.polynomial, cfg.scramble_seed))
    train = stack(sampler, gens, cfg.train_points)
    test = stack(sampler, gens, cfg.test_points)  # each generator goes on after its training set
    k = min(cfg.train_eval_points, cfg.train_points)
    return {"train": train, "train_eval": Split(train.x[:, :k], train.y[:, :k]), "test": test}


def make_model(cfg: Config) -> ReplicaMLP:
    return cfg.make_mlp(VARIABLES, 1, residual=cfg.residual)


def evaluate(model: ReplicaMLP, data: engine.Data) -> engine.Measured:
    """train_mse, train_nmse (fixed subsample), test_mse and test_nmse, each [R]."""
    scored = {"train": data["train_eval"], "test": data["test"]}
    return engine.split_metrics(model, scored, {"mse": engine.mse, "nmse": engine.nmse})


def sweep_bases(seed: int, n: int) -> Tensor:
    """n base points [n, 6] from U[0, 2]^6 for `sweep_curves`, from their own stream."""
    (gen,) = replica_generators([seed], "sweep")
    return inputs(gen, n)


@torch.no_grad()
def sweep_curves(
    model: ReplicaMLP, monomials: Sequence[Monomial], bases: Tensor, grid_size: int = 101
) -> dict[str, Tensor]:
    """Per-variable sweeps (paper 003 B, steps 6-7), averaged over the base points.

    For each variable i and base point p, x_i runs over a uniform grid on [0, 2] while the other
    variables keep p's values. Returns grid [G]; model [R, 6, G] and target [6, G], the mean over
    base points of the model's and the polynomial's values; abs_error [R, 6, G], the mean over
    base points of |model - target|.
    """
    device = next(model.parameters()).device
    grid = torch.linspace(0.0, INPUT_HIGH, grid_size, device=device)
    p = bases.shape[0]
    points = bases.to(device)[None, :, None, :].repeat(VARIABLES, 1, grid_size, 1)  # [6, P, G, 6]
    for i in range(VARIABLES):
        points[i, :, :, i] = grid
    flat = points.reshape(1, -1, VARIABLES).expand(model.replicas, -1, -1)
    pred = model(flat).reshape(model.replicas, VARIABLES, p, grid_size)
    target = evaluate_polynomial(monomials, points)[..., 0]  # [6, P, G]
    return {
        "grid": grid,
        "model": pred.mean(dim=2),
        "target": target.mean(dim=1),
        "abs_error": (pred - target).abs().mean(dim=2),
    }


def sweep_plots(
    model: ReplicaMLP,
    data: engine.Data,
    final: engine.Measured,
    replica: int,
    cfg: Config,
    bases: int = 8,
) -> dict[str, Any]:
    """One replica's per-variable sweep curves against the polynomial (paper 003 B, steps 6-7)."""
    monomials = monomials_for(cfg.polynomial, cfg.scramble_seed)
    curves = sweep_curves(model, monomials, sweep_bases(cfg.seeds[0], bases))
    grid = curves["grid"].tolist()
    seed = cfg.seeds[replica]
    series = {}
    for i in range(VARIABLES):
        series[f"x{i + 1} model"] = (grid, curves["model"][replica, i].tolist())
        series[f"x{i + 1} target"] = (grid, curves["target"][i].tolist())
    return {
        "variable_sweeps": artifacts.curves(
            series, title=f"{cfg.polynomial}: mean over {bases} base points (seed {seed})",
            x_label="x_i (others at the base points)", y_label="value",
            dashed=[k for k in series if k.endswith("target")],
            colors={k: int(k[1]) - 1 for k in series},
        )
    }  # fmt: skip


def make_task(cfg: Config) -> engine.Task:
    return engine.Task(
        make_model(cfg),
        make_data(cfg),
        engine.mse,
        evaluate,
        batches=engine.Minibatches(cfg.batch_size),
        artifacts=partial(sweep_plots, cfg=cfg),
    )


def run(
    config: Mapping[str, Any], report: Reporter = no_report, device: str | None = None
) -> dict[str, Any]:
    cfg = Config.from_mapping(config)
    return engine.run(cfg, make_task(cfg), report, device)
