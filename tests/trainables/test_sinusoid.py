"""Sinusoid (paper 000 §3.3): the data and the interior σ⁻¹ optimum."""

from __future__ import annotations

import math

import pytest
import torch

from trainables import sinusoid
from trainables.data import regression


def test_sinusoid_data_regions_and_noise():
    g = torch.Generator().manual_seed(0)
    x, y = regression.sinusoid(g, 20000, noise_std=0.25)
    assert x.min() >= -2 * math.pi and x.max() <= 2 * math.pi
    assert (y - torch.sin(x)).std().item() == pytest.approx(0.25, rel=0.03)
    xo, _ = regression.sinusoid(g, 20000, noise_std=0.0, high=3 * math.pi, gap=2 * math.pi)
    assert (xo.abs() >= 2 * math.pi).all() and (xo.abs() <= 3 * math.pi).all()
    assert (xo < 0).float().mean().item() == pytest.approx(0.5, abs=0.02)


def test_sinusoid_has_interior_sigma_inv_optimum():
    """Paper 000 Fig. 3 bottom, at a CI-sized budget: σ⁻¹ = 1 beats both extremes."""
    base = {
        "width": 256,
        "steps": 600,
        "eval_every": 600,
        "lr": 5e-3,
        "replicas": 2,
        "test_points": 500,
    }
    mse = {s: sinusoid.run({**base, "sigma_inv": s})["test_mse"] for s in (0.05, 1.0, 20.0)}
    assert mse[1.0] < mse[0.05] and mse[1.0] < mse[20.0], mse


def test_the_clean_error_is_the_noisy_one_less_the_label_noise():
    """E[(f - y)²] = E[(f - sin x)²] + σ² for labels y = sin x + ε, ε ~ N(0, σ²)."""
    cfg = {"width": 64, "steps": 300, "eval_every": 300, "lr": 5e-3, "replicas": 4,
           "test_points": 20000, "ood_points": 20000}  # fmt: skip
    out = sinusoid.run(cfg)
    floor = sinusoid.Config.from_mapping(cfg).noise_floor("test_mse")
    assert floor == pytest.approx(0.0625)
    assert out["test_mse"] - out["test_mse_clean"] == pytest.approx(floor, rel=0.1)
    assert out["ood_mse"] - out["ood_mse_clean"] == pytest.approx(floor, rel=0.1)
