"""Hierarchical vs scrambled polynomial (paper 003 part B): a residual ReLU net learning B6 or B̃6.

The target is the sixth complete Bell polynomial B6(x1, …, x6), whose monomials are built
hierarchically (B_{n+1} = Σ_k C(n, k) B_{n-k} x_{k+1}), or a scrambled counterpart B̃6 with the same
coefficients and monomial shapes but the variables of each monomial permuted. The model is a
fully-connected residual network: 6 → 8 hidden layers of 50 → 1, ReLU after every hidden layer,
a skip connection around every hidden layer whose input has its size (the 7 layers 50 → 50; the
first, 6 → 50, has none). Inputs are U[0, 2]^6; Adam with a tuned learning rate, batch 20.
Metrics: train_mse (on a fixed subsample of the training set) and test_mse; `sweep_curves`
computes the per-variable sweeps of the paper's step 6-7 (model vs target along each x_i).

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
  turn for each monomial by rejection from `random.Random(scramble_seed)`, so a scramble is a
  pure function of its seed, and the same for every replica (`scramble_seed` is a field apart from
  `seed`, which drives data and initialisation).
- "9 layers (1 input, 8 hidden, 1 output)" is read as 9 linear maps: 6 → 50, seven 50 → 50 and
  50 → 1, i.e. 8 hidden layers of 50 units; PyTorch's default initialisation.
- Mini-batches are drawn uniformly with replacement (`engine.minibatches`), so an "epoch" is
  train_points / batch_size steps: steps = ceil(epochs · train_points / batch_size). Evaluations
  come once per epoch unless eval_every is set. The learning rate is constant by default.
- train_mse is measured on the first train_eval_points training points (a fixed subsample): the
  full training set at every evaluation costs as much as the test set and says little more.
- The paper draws one base point per sweep and suggests averaging several (step 7): `sweep_curves`
  takes any number of base points and returns their mean curves and mean absolute error.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor

from trainables import artifacts, engine
from trainables.config import require
from trainables.data import Split
from trainables.nn import Activation, NetworkConfig, ReplicaMLP, replica_generators

Polynomial = Literal["bell", "scrambled"]
Monomial = tuple[float, tuple[int, ...]]  # (coefficient, exponents of x1, …, x6)
VARIABLES = 6
INPUT_HIGH = 2.0  # inputs are U[0, INPUT_HIGH]^6

# B6 written out, in the paper's order (with its x3² typo corrected to x2³).
B6: tuple[Monomial, ...] = (
    (1.0, (6, 0, 0, 0, 0, 0)),  # x1⁶
    (15.0, (4, 1, 0, 0, 0, 0)),  # 15 x2 x1⁴
    (20.0, (3, 0, 1, 0, 0, 0)),  # 20 x3 x1³
    (45.0, (2, 2, 0, 0, 0, 0)),  # 45 x2² x1²
    (15.0, (0, 3, 0, 0, 0, 0)),  # 15 x2³  (printed as 15 x3² in the paper)
    (60.0, (1, 1, 1, 0, 0, 0)),  # 60 x3 x2 x1
    (15.0, (2, 0, 0, 1, 0, 0)),  # 15 x4 x1²
    (10.0, (0, 0, 2, 0, 0, 0)),  # 10 x3²
    (15.0, (0, 1, 0, 1, 0, 0)),  # 15 x4 x2
    (6.0, (1, 0, 0, 0, 1, 0)),  # 6 x5 x1
    (1.0, (0, 0, 0, 0, 0, 1)),  # x6
)


@dataclass(frozen=True)
class Config(NetworkConfig):
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
    lr: float = 1e-3
    """Adam learning rate (the tuned parameter)"""
    lr_decay: float = 1.0
    """multiply the learning rate by this every decay_every steps (1: constant, the default)"""
    decay_every: int = 5000
    """steps between learning-rate decays"""
    eval_every: int | None = None
    """steps between evaluations; none: once per epoch"""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("train_points", "test_points", "train_eval_points", "batch_size", "epochs"):
            require(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))
        require(self.lr > 0, "lr", "> 0", self.lr)
        require(0 < self.lr_decay <= 1, "lr_decay", "in (0, 1]", self.lr_decay)
        require(self.decay_every >= 1, "decay_every", ">= 1", self.decay_every)
        if self.eval_every is not None:
            require(self.eval_every >= 1, "eval_every", ">= 1 or none", self.eval_every)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.train_points / self.batch_size)

    @property
    def steps(self) -> int:
        return math.ceil(self.epochs * self.train_points / self.batch_size)

    @property
    def schedule(self) -> engine.Schedule:
        return engine.Schedule(
            steps=self.steps,
            lr=self.lr,
            lr_decay=self.lr_decay,
            decay_every=self.decay_every,
            eval_every=self.eval_every or self.steps_per_epoch,
        )


# --- the polynomials ------------------------------------------------------------------------------


def permute_monomial(monomial: Monomial, sigma: Sequence[int]) -> Monomial:
    """Replace x_j by x_σ(j) (0-based indices): the exponent of x_j moves to x_σ(j)."""
    coeff, exps = monomial
    new = [0] * len(exps)
    for j, e in enumerate(exps):
        new[sigma[j]] += e
    return coeff, tuple(new)


def scramble_permutations(seed: int, monomials: Sequence[Monomial] = B6) -> list[tuple[int, ...]]:
    """σ_i for each monomial, drawn by rejection so that B̃6 obeys the paper's three rules.

    Per monomial: every variable in it moves (σ(j) ≠ j), the monomial changes, σ differs from the
    earlier σs and the new monomial from the earlier new monomials. A draw that leaves a variable
    unused starts over (from the same random stream, so the result depends only on the seed).
    """
    rng = random.Random(seed)
    for _ in range(1000):
        sigmas: list[tuple[int, ...]] = []
        seen: set[tuple[int, ...]] = set()
        for coeff, exps in monomials:
            support = [j for j, e in enumerate(exps) if e]
            for _ in range(10_000):
                sigma = tuple(rng.sample(range(VARIABLES), VARIABLES))
                new = permute_monomial((coeff, exps), sigma)[1]
                moved = all(sigma[j] != j for j in support) and new != exps
                if moved and sigma not in sigmas and new not in seen:
                    break
            else:
                raise RuntimeError(f"no valid permutation for monomial {exps}")
            sigmas.append(sigma)
            seen.add(new)
        used = {j for exps in seen for j, e in enumerate(exps) if e}
        if len(used) == VARIABLES:
            return sigmas
    raise RuntimeError(f"no scramble using all {VARIABLES} variables for seed {seed}")


def scrambled_monomials(seed: int) -> list[Monomial]:
    """B̃6: each monomial of B6 with its own permutation of the variables (see above)."""
    return [permute_monomial(m, s) for m, s in zip(B6, scramble_permutations(seed))]


def monomials_for(polynomial: Polynomial, scramble_seed: int = 0) -> list[Monomial]:
    return list(B6) if polynomial == "bell" else scrambled_monomials(scramble_seed)


def evaluate_polynomial(monomials: Sequence[Monomial], x: Tensor) -> Tensor:
    """Σ c · Π_j x_j^e_j for x [..., 6]: y [..., 1], computed in float64, returned in x's dtype."""
    coeffs = torch.tensor([c for c, _ in monomials], dtype=torch.float64, device=x.device)
    exps = torch.tensor([e for _, e in monomials], dtype=torch.float64, device=x.device)
    terms = x.double().unsqueeze(-2).pow(exps).prod(dim=-1)  # [..., M]; 0⁰ = 1
    return (terms @ coeffs).unsqueeze(-1).to(x.dtype)


def describe(monomials: Sequence[Monomial]) -> str:
    """Human-readable form, e.g. "15·x1^4·x2 + … + x6"."""

    def term(c: float, exps: tuple[int, ...]) -> str:
        xs = [f"x{j + 1}" + (f"^{e}" if e > 1 else "") for j, e in enumerate(exps) if e]
        return "·".join(([f"{c:g}"] if c != 1 else []) + xs)

    return " + ".join(term(c, e) for c, e in monomials)


# --- data, model, metrics -------------------------------------------------------------------------


def sample_points(gen: torch.Generator, n: int, monomials: Sequence[Monomial]):
    x = torch.rand(n, VARIABLES, generator=gen) * INPUT_HIGH
    return x, evaluate_polynomial(monomials, x)


def make_data(cfg: Config) -> dict[str, Split]:
    """Train, train_eval (the first train_eval_points) and test splits, x [R, N, 6], y [R, N, 1]."""
    gens = replica_generators(cfg.seeds, "data")
    monomials = monomials_for(cfg.polynomial, cfg.scramble_seed)
    train = [sample_points(g, cfg.train_points, monomials) for g in gens]
    test = [sample_points(g, cfg.test_points, monomials) for g in gens]
    tx, ty = torch.stack([x for x, _ in train]), torch.stack([y for _, y in train])
    k = min(cfg.train_eval_points, cfg.train_points)
    return {
        "train": Split(tx, ty),
        "train_eval": Split(tx[:, :k], ty[:, :k]),
        "test": Split(torch.stack([x for x, _ in test]), torch.stack([y for _, y in test])),
    }


def make_model(cfg: Config) -> ReplicaMLP:
    return cfg.make_mlp(VARIABLES, 1, residual=cfg.residual)


@torch.no_grad()
def evaluate(model: ReplicaMLP, splits: Mapping[str, Split]) -> dict[str, Tensor]:
    """train_mse (fixed subsample) and test_mse, each [R]."""
    scored = {"train": splits["train_eval"], "test": splits["test"]}
    return engine.split_metrics(model, scored, {"mse": engine.mse})


def sweep_bases(seed: int, n: int) -> Tensor:
    """n base points [n, 6] from U[0, 2]^6 for `sweep_curves`, from their own stream."""
    (gen,) = replica_generators([seed], "sweep")
    return torch.rand(n, VARIABLES, generator=gen) * INPUT_HIGH


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


def sweep_plots(model: ReplicaMLP, cfg: Config, bases: int = 8) -> dict[str, Any]:
    """Per-variable sweep curves of replica 0 against the polynomial (paper 003 B, steps 6-7)."""
    monomials = monomials_for(cfg.polynomial, cfg.scramble_seed)
    curves = sweep_curves(model, monomials, sweep_bases(cfg.seed, bases).to(_device(model)))
    grid = curves["grid"].tolist()
    series = {}
    for i in range(6):
        series[f"x{i + 1} model"] = (grid, curves["model"][0, i].tolist())
        series[f"x{i + 1} target"] = (grid, curves["target"][i].tolist())
    return {
        "variable_sweeps": artifacts.curves(
            series, title=f"{cfg.polynomial}: mean over {bases} base points (replica 0)",
            x_label="x_i (others at the base points)", y_label="value",
            dashed=[k for k in series if k.endswith("target")],
            colors={k: int(k[1]) - 1 for k in series},
        )
    }  # fmt: skip


def _device(model: ReplicaMLP) -> torch.device:
    return next(model.parameters()).device


def run(
    config: Mapping[str, Any], report: engine.Reporter = engine.no_report, device: str | None = None
) -> dict[str, Any]:
    cfg = Config.from_mapping(config)
    dev = engine.pick_device(device)
    splits = {k: v.to(dev) for k, v in make_data(cfg).items()}
    outcome = engine.train(
        make_model(cfg).to(dev),
        engine.minibatches(splits["train"], cfg.batch_size, cfg.seeds),
        engine.mse,
        partial(evaluate, splits=splits),
        cfg.schedule,
        report,
        artifacts=partial(sweep_plots, cfg=cfg),
    )
    return outcome.metrics
