"""Bell polynomial (paper 003 B): B6 from the recurrence, the scramble's rules, the residual net."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from trainables import bell_polynomial as bp
from trainables import engine
from trainables.config import ConfigError
from trainables.data import polynomials as poly
from trainables.nn import ReplicaMLP, replica_generators
from trainables.report import Metric

SMALL = {"replicas": 2, "train_points": 2000, "test_points": 1000, "train_eval_points": 500,
         "epochs": 2, "lr": 3e-3}  # fmt: skip


def bell_by_recurrence(n: int) -> dict[tuple[int, ...], int]:
    """B_{m+1} = Σ_k C(m, k) B_{m-k} x_{k+1}, B_0 = 1, as {exponent vector: coefficient}."""
    polys: list[Counter] = [Counter({(0,) * n: 1})]
    for m in range(n):
        nxt: Counter = Counter()
        for k in range(m + 1):
            for exps, c in polys[m - k].items():
                e = list(exps)
                e[k] += 1
                nxt[tuple(e)] += math.comb(m, k) * c
        polys.append(nxt)
    return dict(polys[n])


def test_b6_is_the_complete_bell_polynomial():
    assert {e: int(c) for c, e in poly.B6} == bell_by_recurrence(6)
    assert sum(c for c, _ in poly.B6) == 203  # the Bell number B_6
    # numerically too, from the recurrence on values
    x = torch.rand(50, 6, dtype=torch.float64) * 2
    b = [torch.ones(50, dtype=torch.float64)]
    for m in range(6):
        b.append(sum(math.comb(m, k) * b[m - k] * x[:, k] for k in range(m + 1)))
    torch.testing.assert_close(poly.evaluate_polynomial(poly.B6, x)[:, 0], b[6])


def test_evaluate_polynomial_known_values():
    ones = torch.ones(1, 6)
    assert poly.evaluate_polynomial(poly.B6, ones).item() == 203
    x1 = torch.tensor([[1.5, 0, 0, 0, 0, 0]])
    assert poly.evaluate_polynomial(poly.B6, x1).item() == pytest.approx(1.5**6)
    assert poly.evaluate_polynomial(poly.B6, torch.zeros(3, 4, 6)).shape == (3, 4, 1)


def shape(exps):
    return sorted(e for e in exps if e)


@pytest.mark.parametrize("seed", range(8))
def test_scramble_obeys_the_papers_rules(seed):
    sigmas = poly.scramble_permutations(seed)
    scrambled = poly.scrambled_monomials(seed)
    assert len(scrambled) == len(poly.B6)
    assert len(set(sigmas)) == len(sigmas)  # no two monomials share a permutation
    for (c, exps), (c2, new), sigma in zip(poly.B6, scrambled, sigmas):
        assert sorted(sigma) == list(range(6))
        assert c2 == c and shape(new) == shape(exps)  # same coefficient, same monomial shape
        assert all(sigma[j] != j for j, e in enumerate(exps) if e)  # every variable replaced
        assert new != exps
        assert poly.permute_monomial((c, exps), sigma) == (c2, new)
    assert len({e for _, e in scrambled}) == len(scrambled)  # not equal up to commutativity
    assert all(any(e[j] for _, e in scrambled) for j in range(6))


@pytest.mark.parametrize("seed", range(4))
def test_scrambled_polynomial_depends_on_every_input(seed):
    x = (torch.rand(200, 6, dtype=torch.float64) * 2).requires_grad_()
    poly.evaluate_polynomial(poly.scrambled_monomials(seed), x).sum().backward()
    assert (x.grad.abs().amax(dim=0) > 0).all()


def test_scramble_is_a_function_of_its_seed():
    assert poly.scrambled_monomials(3) == poly.scrambled_monomials(3)
    assert poly.scrambled_monomials(3) != poly.scrambled_monomials(4)
    assert poly.monomials_for("bell") == list(poly.B6)
    assert poly.monomials_for("scrambled", 5) == poly.scrambled_monomials(5)


def test_steps_follow_epochs_and_evaluations_come_once_per_epoch():
    cfg = bp.Config()
    assert cfg.steps is None and cfg.num_steps == 30 * 100_000 // 20 == 150_000
    assert cfg.eval_period == 5000 and cfg.lr_decay == 1.0 and cfg.decay_every == 5000
    assert bp.Config(eval_every=100).eval_period == 100
    assert bp.Config(epochs=3, train_points=1001, batch_size=20).num_steps == 151  # ⌈3 · 1001 / 20⌉
    # a set `steps` wins over epochs; evaluations stay once per epoch
    short = bp.Config(steps=7, epochs=30)
    assert short.num_steps == 7 and short.eval_period == 5000


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [("steps", 0, ">= 1"), ("eval_every", 0, ">= 1"), ("batch_size", 0, ">= 1"),
     ("epochs", 0, ">= 1"), ("train_points", 0, ">= 1")],
)  # fmt: skip
def test_config_rejects_bad_budgets_by_name(field, value, rule):
    with pytest.raises(ConfigError, match=f"`{field}` must be {rule}, but got {value}"):
        bp.Config.from_mapping({field: value})


def test_declares_its_metrics():
    names = ("train_mse", "test_mse", "train_nmse", "test_nmse")
    assert bp.Config().metrics() == {name: Metric("min") for name in names}


def test_data_shapes_and_targets():
    cfg = bp.Config(**{**SMALL, "polynomial": "scrambled", "scramble_seed": 2})
    splits = bp.make_data(cfg)
    assert splits["train"].x.shape == (2, 2000, 6) and splits["test"].y.shape == (2, 1000, 1)
    assert torch.equal(splits["train_eval"].x, splits["train"].x[:, :500])
    x = splits["test"].x
    assert x.min() >= 0 and x.max() <= 2
    torch.testing.assert_close(
        splits["test"].y, poly.evaluate_polynomial(poly.scrambled_monomials(2), x)
    )
    # replica 1's data depend on its own seed only
    alone = bp.make_data(bp.Config(**{**SMALL, "replicas": 1, "seed": cfg.seeds[1]}))
    assert torch.equal(alone["train"].x[0], splits["train"].x[1])


def test_model_is_the_papers_residual_net():
    cfg = bp.Config(replicas=2)
    model = bp.make_model(cfg)
    assert [layer.n_out for layer in model.layers] == [50] * 8 + [1]
    plain = ReplicaMLP([6, *[50] * 8, 1], replica_generators(cfg.seeds, "init"), activation="relu")
    x = torch.rand(2, 64, 6) * 2
    for a, b in zip(model.parameters(), plain.parameters()):
        assert torch.equal(a, b)  # same initial weights: only the skips differ
    assert not torch.allclose(model(x), plain(x))
    assert bp.make_model(bp.Config(replicas=2, residual=False))(x).allclose(plain(x))


def test_short_run_reduces_test_mse():
    cfg = bp.Config(**SMALL)
    test = bp.make_data(cfg)["test"]
    with torch.no_grad():
        initial = engine.mse(bp.make_model(cfg)(test.x), test.y)
    seen = []
    final = bp.run(SMALL, report=lambda step, m: seen.append(step))
    assert seen == [100, 200]  # once per epoch
    assert {"train_mse", "test_mse", "test_mse/r1", "train_nmse", "test_nmse/r1"} <= set(final)
    data = bp.make_data(cfg)
    for split, key in (("test", "test"), ("train_eval", "train")):
        variance = data[split].y.flatten(1).var(dim=1, correction=0)
        for r in range(2):
            expected = final[f"{key}_mse/r{r}"] / variance[r].item()
            assert final[f"{key}_nmse/r{r}"] == pytest.approx(expected, rel=1e-5)
    assert final["test_nmse"] < 0.5  # better than predicting the mean, by far
    assert set(final["artifacts"]) == {"variable_sweeps"}
    assert final["test_mse/r0"] < 0.2 * initial[0].item()
    assert final["test_mse/r1"] < 0.2 * initial[1].item()


class Exact(torch.nn.Module):
    """A 'model' that is the polynomial itself, for two replicas."""

    def __init__(self, monomials):
        super().__init__()
        self.monomials, self.replicas = monomials, 2
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return poly.evaluate_polynomial(self.monomials, x)


def test_sweep_curves_vary_one_variable_at_a_time():
    monomials = poly.scrambled_monomials(1)
    bases = bp.sweep_bases(0, 3)
    assert bases.shape == (3, 6) and torch.equal(bases, bp.sweep_bases(0, 3))
    out = bp.sweep_curves(Exact(monomials), monomials, bases, grid_size=11)
    assert out["grid"].tolist() == pytest.approx([0.2 * i for i in range(11)])
    assert out["model"].shape == (2, 6, 11) and out["target"].shape == (6, 11)
    assert out["abs_error"].abs().max().item() < 1e-3  # the exact model has no error
    # target[i, g]: the mean over bases of the polynomial with x_i set to grid[g]
    i, g = 4, 7
    points = bases.clone()
    points[:, i] = out["grid"][g]
    expected = poly.evaluate_polynomial(monomials, points).mean()
    assert out["target"][i, g].item() == pytest.approx(expected.item(), rel=1e-5)
    trained = bp.sweep_curves(bp.make_model(bp.Config(replicas=2)), monomials, bases, 11)
    assert trained["abs_error"].shape == (2, 6, 11) and (trained["abs_error"] > 0).all()
