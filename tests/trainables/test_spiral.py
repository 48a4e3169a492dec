"""Spiral (paper 004): data geometry, weight statistics, robustness."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from service.spec import load_spec
from trainables import spiral
from trainables.data.spiral import spiral as draw_spiral
from trainables.data.spiral import spiral_embedding


def test_spiral_is_balanced_and_arms_are_distance_apart():
    g = torch.Generator().manual_seed(0)
    x, label = draw_spiral(g, 4000, entanglement=4 * math.pi, distance=1.0)
    assert label.float().mean().item() == 0.5
    # along any direction the two spirals alternate every π·b = distance
    r = x.norm(dim=1)
    phi = torch.atan2(x[:, 1], x[:, 0])
    near = phi.abs() < 0.01
    radii0 = torch.sort(r[near & (label == 0)]).values
    radii1 = torch.sort(r[near & (label == 1)]).values
    gaps = (radii0[:, None] - radii1[None, :]).abs().min(dim=1).values
    assert gaps.max().item() == pytest.approx(1.0, abs=0.05)


def test_spiral_codimension_embedding_is_an_isometry():
    emb = spiral_embedding(3)
    torch.testing.assert_close(emb @ emb.T, torch.eye(2), atol=1e-6, rtol=0)
    cfg = spiral.Config(codimension=3, train_points=20, test_points=20)
    assert spiral.make_data(cfg)["train"].x.shape == (1, 20, 5)


def test_spiral_frobenius_norm_matches_torch_and_sigma():
    cfg = spiral.Config(width=16, depth=2, sigma_inv=2.0, steps=1, train_points=20, test_points=20)
    model = spiral.make_model(cfg)
    metrics = spiral.evaluate(model, spiral.make_data(cfg))
    first = model.layers[0].effective_weight()[0]
    assert metrics["fro_norm_l0"][0].item() == pytest.approx(
        np.linalg.norm(first.detach().numpy()), rel=1e-5
    )
    # std σ/√n over n·m entries with mean ~0: ‖W‖_F ≈ σ√m
    assert metrics["fro_norm_l1"][0].item() == pytest.approx(0.5 * math.sqrt(16), rel=0.2)


def test_spiral_learns_an_easy_spiral():
    out = spiral.run(
        {
            "width": 32,
            "steps": 300,
            "eval_every": 300,
            "entanglement": 6.283,
            "train_points": 400,
            "test_points": 400,
        }
    )
    assert out["test_acc"] > 0.9


def test_higher_entanglement_means_more_turns_at_fixed_distance():
    """Turns of an arm = (φ_max - φ_min) / 2π; the radius grows by `distance` per half turn."""
    g = torch.Generator().manual_seed(0)
    turns = []
    for entanglement in (2 * math.pi, 4 * math.pi, 8 * math.pi):
        x, label = draw_spiral(g, 4000, entanglement=entanglement, distance=1.0)
        angle = torch.atan2(x[label == 0, 1], x[label == 0, 0])
        r = x[label == 0].norm(dim=1)
        # unwrap the angle along increasing radius: total winding of arm 0
        order = torch.argsort(r)
        unwrapped = np.unwrap(angle[order].numpy())
        turns.append((unwrapped.max() - unwrapped.min()) / (2 * math.pi))
        assert r.max().item() == pytest.approx(entanglement / math.pi, rel=0.01)  # b·φ_max
    assert turns[0] < turns[1] < turns[2]
    assert turns[2] == pytest.approx((8 * math.pi - 0.5) / (2 * math.pi), rel=0.02)


def test_spiral_reports_weight_statistics_gradient_sparsity_and_robustness():
    cfg = {"width": 16, "steps": 40, "eval_every": 20, "train_points": 200, "test_points": 200,
           "activation": "relu", "normalise": False, "entanglement": 6.283}  # fmt: skip
    reports = []
    out = spiral.run(cfg, lambda s, m: reports.append(dict(m)))
    assert {"sv_max_l0", "cond_l1", "eig_abs_mean_l1", "zero_grad_l1"} <= set(reports[0])
    assert "fgsm_acc_0.1" not in reports[0]  # robustness only at the final evaluation
    for name in ("fgsm_acc_0.1", "bim_acc_0.1", "bim_acc_0.2"):
        assert 0.0 <= out[name] <= out["test_acc"] + 1e-12
    assert out["bim_acc_0.2"] <= out["fgsm_acc_0.2"] + 0.05  # iterating rarely helps the defender
    assert 0.0 <= out["zero_grad_l1"] <= 1.0
    plots = out["artifacts"]
    assert plots["decision_boundary"]["kind"] == "surface" and "accuracy_vs_l2_eps" not in plots
    (curve,) = plots["accuracy_vs_bim_eps"]["series"]  # replica 0's, labelled by its weight decay
    assert curve["label"] == "wd=0" and curve["x"] == [0.0, 0.05, 0.1, 0.2]
    assert curve["y"] == pytest.approx(
        [out["test_acc/r0"]] + [out[f"bim_acc_{e}/r0"] for e in (0.05, 0.1, 0.2)]
    )


# --- the thesis's configuration (search_spaces/spiral_thesis.yaml) --------------------------------


@pytest.fixture(scope="module")
def thesis_runs():
    """Every cell of the shipped thesis spec at its smoke budget: {(activation, φ_max): final}."""
    spec = load_spec("spiral_thesis", "smoke")
    assert not spec.search  # a cell is one trial: the spec's values, nothing suggested
    runs = {}
    for cell in spec.cells():
        runs[cell["activation"], cell["entanglement"]] = spiral.run(spec.trial_config(cell, {}))
    return spec, runs


def per_seed(run: dict, name: str, replicas: int) -> list[float]:
    return [run[f"{name}/r{r}"] for r in range(replicas)]


def test_thesis_hypothesis_1_norm_rises_with_entanglement(thesis_runs):
    """Ch. 4.1.1: plain 5×50 nets trained alike on spirals of φ_max = 2π, 4π, 8π; the largest
    Frobenius norm of a matrix into a hidden layer rises with φ_max: for tanh in every seed, for
    ReLU in the mean over seeds (one ReLU seed in eight is flat from 4π to 8π at some budgets)."""
    spec, runs = thesis_runs
    cfg = spiral.Config.from_mapping(spec.trial_config(spec.cells()[0], {}))
    ladder = sorted(spec.axes["entanglement"])
    assert ladder == pytest.approx([2 * math.pi, 4 * math.pi, 8 * math.pi], rel=1e-5)
    for activation in ("tanh", "relu"):
        norms = []  # [φ_max][seed]
        for phi in ladder:
            layers = [per_seed(runs[activation, phi], f"fro_norm_l{i}", cfg.replicas)
                      for i in range(cfg.depth)]  # fmt: skip
            norms.append([max(seed) for seed in zip(*layers)])
        mean = [sum(n) / len(n) for n in norms]  # not a drift within noise: ≥ 10% a doubling
        assert mean[1] > 1.1 * mean[0] and mean[2] > 1.1 * mean[1], (activation, norms)
        if activation == "tanh":
            for seed, (low, mid, high) in enumerate(zip(*norms)):
                assert low < mid < high, (seed, norms)
        easy = min(runs[activation, ladder[0]][f"test_acc/r{r}"] for r in range(cfg.replicas))
        assert easy > 0.99  # trained, not merely initialised: 2π is easy


def test_thesis_relu_zeroes_gradients_tanh_does_not(thesis_runs):
    """Ch. 4.2, Fig. 4.8: a large share of a ReLU net's weight gradients is exactly 0 in every
    layer behind a ReLU; tanh showed none. Per seed, layer and φ_max."""
    spec, runs = thesis_runs
    cfg = spiral.Config.from_mapping(spec.trial_config(spec.cells()[0], {}))
    for phi in spec.axes["entanglement"]:
        for i in range(1, cfg.depth + 1):  # layer 0 sees the raw input, not a ReLU's output
            relu = per_seed(runs["relu", phi], f"zero_grad_l{i}", cfg.replicas)
            tanh = per_seed(runs["tanh", phi], f"zero_grad_l{i}", cfg.replicas)
            assert min(relu) > 0.05 and max(tanh) < 0.01, (phi, i, relu, tanh)


def test_thesis_eigenvalue_metrics_are_declared_and_consistent(thesis_runs):
    """The square 50×50 layers report the thesis's eigenvalue statistics, which agree with each
    other: spread = max − min, cond = max / min, min ≤ mean ≤ max."""
    spec, runs = thesis_runs
    run = runs["tanh", spec.axes["entanglement"][0]]
    cfg = spiral.Config.from_mapping(spec.trial_config(spec.cells()[0], {}))
    declared = set(cfg.metrics())
    for i in range(1, cfg.depth):
        names = {f"eig_{m}_l{i}" for m in ("abs_mean", "abs_max", "abs_min", "spread", "cond")}
        assert names <= declared
        lo, mean, hi = (run[f"eig_abs_{m}_l{i}"] for m in ("min", "mean", "max"))
        assert 0 < lo <= mean <= hi
        for r in range(cfg.replicas):
            lo, hi = run[f"eig_abs_min_l{i}/r{r}"], run[f"eig_abs_max_l{i}/r{r}"]
            assert run[f"eig_spread_l{i}/r{r}"] == pytest.approx(hi - lo)
            assert run[f"eig_cond_l{i}/r{r}"] == pytest.approx(hi / lo)
    assert "eig_spread_l0" not in run and "eig_cond_l5" not in run  # 2×50 and 50×2: not square
