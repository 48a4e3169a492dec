"""Spiral (paper 004): data geometry, weight statistics, robustness."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

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
