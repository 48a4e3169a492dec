"""The optimum with nuisance parameters profiled out or sliced, and its honesty flags, on surfaces
with known answers."""

from __future__ import annotations

import math
import sys

import numpy as np
import pandas as pd
import pytest

from service import analysis, optimum
from service import conventions as cv
from service.errors import SpecError

X0, LR0, SLOPE = 2.0, 3e-3, 1.0  # at lr the best x is X0·(lr/LR0)^SLOPE; the best lr is LR0


def surface(x: np.ndarray, lr: np.ndarray) -> np.ndarray:
    """test_mse(x, lr): a valley in log x whose floor moves with lr, lowest at lr = LR0."""
    u, v = np.log(x), np.log(lr / LR0)
    return np.exp((u - math.log(X0) - SLOPE * v) ** 2 + 0.3 * v**2)


def trials(n: int = 300, lr_range=(LR0 / math.e**2, LR0 * math.e**0.5), seed: int = 0, **attrs):
    """Trials at random (x, lr), lr sampled lopsidedly (as a searcher that found low lr good)."""
    rng = np.random.default_rng(seed)
    x = np.exp(rng.uniform(math.log(0.05), math.log(50), n))
    lr = np.exp(rng.uniform(*np.log(lr_range), n))
    truth = surface(x, lr)
    rows = []
    for i in range(n):
        values = truth[i] * np.exp(0.03 * rng.standard_normal(3))
        row = {cv.replica_metric("test_mse", k): float(v) for k, v in enumerate(values)}
        rows.append({"run_id": f"r{i}", "trial_id": f"t{i:04d}", "status": "FINISHED",
                     "width": 16, "sigma_inv": float(x[i]), "lr": float(lr[i]),
                     "test_mse": float(values.mean()), **row})  # fmt: skip
    frame = pd.DataFrame(rows)
    frame.attrs.update({
        "axes": ["width"], "objective_metric": "test_mse", "objective_mode": "min",
        "search": {"sigma_inv": {"low": 0.05, "high": 50.0, "log": True},
                   "lr": {"low": lr_range[0], "high": lr_range[1], "log": True}},
        **attrs,
    })  # fmt: skip
    return frame


def test_profiling_the_learning_rate_out_finds_the_optimum_an_average_over_it_misses():
    frame = trials()
    profiled = analysis.optimum(frame, n_boot=100).iloc[0]
    averaged = analysis.optimum(frame, nuisance=[], n_boot=100).iloc[0]
    assert profiled["method"] == "profile(lr)" and averaged["method"] == "smooth"
    assert profiled["x_opt"] == pytest.approx(X0, rel=0.1)
    assert profiled["ci_low"] <= X0 <= profiled["ci_high"]
    assert profiled["metric_at_opt"] == pytest.approx(1.0, rel=0.1)  # the floor at lr = LR0
    # lr was mostly sampled below LR0, where the valley's floor sits at smaller x
    assert averaged["x_opt"] < 0.7 * X0 and not averaged["ci_low"] <= X0 <= averaged["ci_high"]


def skewed_valley(x: np.ndarray, lr: np.ndarray) -> np.ndarray:
    """A sweep-like surface: a noise floor, a lopsided valley in log x (steep on the right, as
    the sinusoid's underfitting side) whose floor moves with lr; no quadratic fits it exactly.
    At each lr the best x is X0·(lr/LR0)^0.5·2^(-1/3); the best lr is LR0."""
    v = np.log(lr / LR0)
    d = np.log(x) - math.log(X0) - 0.5 * v
    return 0.06 + 0.1 * (np.exp(2 * d) + np.exp(-d)) * (1 + 0.3 * v**2)


def test_with_few_trials_the_surrogate_profile_is_sharper_than_local_quadratics(monkeypatch):
    # Why small groups get a GP surrogate: at a sweep's size (24 trials over σ⁻¹ × lr) the
    # profile of local quadratics lands on whichever unsampled corner noise bends down, and its
    # CI is wide; the GP's covers the truth as often and is about half as wide.
    truth = X0 * 2 ** (-1 / 3)
    monkeypatch.setattr(sys.modules[__name__], "surface", skewed_valley)
    ratios: dict[str, list[float]] = {"gp": [], "local": []}
    for seed in range(6):
        frame = trials(n=24, seed=seed, lr_range=(1e-3, 1e-2))
        for name, cap in (("gp", optimum.GP_MAX_TRIALS), ("local", 0)):
            with monkeypatch.context() as m:
                m.setattr(optimum, "GP_MAX_TRIALS", cap)
                row = analysis.optimum(frame, n_boot=60).iloc[0]
            if name == "gp":
                assert row["ci_low"] <= truth <= row["ci_high"], (seed, row.to_dict())
            ratios[name].append(row["ci_ratio"])
    assert np.median(ratios["gp"]) < 0.6 * np.median(ratios["local"]), ratios


def test_a_slice_at_a_learning_rate_finds_that_rates_optimum():
    lr = LR0 / math.e  # the valley's floor there is at X0 / e
    row = analysis.optimum(trials(), at={"lr": lr}, n_boot=100).iloc[0]
    assert row["method"] == f"slice(lr={lr:g})"
    assert row["x_opt"] == pytest.approx(X0 / math.e, rel=0.1)
    assert row["metric_at_opt"] == pytest.approx(math.exp(0.3), rel=0.1)


def test_the_spec_names_the_nuisance_parameters():
    frame = trials(nuisance=[])  # a spec with `nuisance: []`: lr is scientific too, not profiled
    assert analysis.optimum(frame, n_boot=0).iloc[0]["method"] == "smooth"


def test_the_smooth_comes_with_a_band_that_never_goes_negative():
    fit = analysis.optimum_fit(trials(n=120), n_boot=50)
    smooth = fit.smooth
    assert list(smooth.columns) == ["width", *analysis.SMOOTH_COLUMNS]
    assert (smooth["band_low"] > 0).all() and (smooth["band_low"] <= smooth["band_high"]).all()
    at_opt = smooth.iloc[(smooth["x"] - fit.table["x_opt"][0]).abs().argmin()]
    assert at_opt["band_low"] <= fit.table["metric_at_opt"][0] <= at_opt["band_high"] * 1.05


def _line(xs, values, extra=None):
    rows = [{"run_id": f"r{i}", "trial_id": f"t{i:03d}", "status": "FINISHED", "width": 8,
             "sigma_inv": float(x), "test_mse": float(v), **(extra or {})}
            for i, (x, v) in enumerate(zip(xs, values))]  # fmt: skip
    frame = pd.DataFrame(rows)
    search = {"sigma_inv": {"low": 0.01, "high": 100.0, "log": True}}
    frame.attrs.update(
        {
            "axes": ["width"],
            "objective_metric": "test_mse",
            "objective_mode": "min",
            "search": search,
        }
    )
    return frame


def test_an_optimum_in_a_gap_with_no_trial_is_flagged():
    # trials on both sides of the true optimum at 1, none between 0.1 and 10
    xs = np.concatenate([np.geomspace(0.01, 0.1, 8), np.geomspace(10, 100, 8)])
    rng = np.random.default_rng(1)
    values = np.exp(np.log(xs) ** 2 / 8) * np.exp(0.02 * rng.standard_normal(xs.size))
    row = analysis.optimum(_line(xs, values), n_boot=50).iloc[0]
    assert "gap" in row["flags"].split(",")
    dense = np.geomspace(0.01, 100, 16)
    values = np.exp(np.log(dense) ** 2 / 8)
    assert "gap" not in analysis.optimum(_line(dense, values), n_boot=50).iloc[0]["flags"]


def test_a_smooth_that_promises_more_than_any_trial_delivers_is_flagged():
    # errors that fall towards an unsampled middle from both sides: the smooth through them dips
    # in the gap below every trial there is (the ood_mse case)
    u = np.concatenate([np.linspace(-4, -2, 8), np.linspace(2, 4, 8)])
    rng = np.random.default_rng(2)
    values = np.exp(np.abs(u) - 1) * np.exp(0.01 * rng.standard_normal(u.size))
    row = analysis.optimum(_line(np.exp(u), values), n_boot=50).iloc[0]
    assert row["metric_ci_high"] < values.min()
    assert {"below_data", "gap"} <= set(row["flags"].split(","))
    dense = np.linspace(-4, 4, 17)  # the same curve sampled where it bends: nothing to flag
    row = analysis.optimum(_line(np.exp(dense), np.exp(np.abs(dense) - 1)), n_boot=50).iloc[0]
    assert "below_data" not in row["flags"]


def test_at_edge_and_fit_edge_agree():
    xs = np.geomspace(0.01, 100, 12)
    row = analysis.optimum(_line(xs, 1 / xs), n_boot=20).iloc[0]
    assert row["fit"] == "edge" and row["at_edge"] and "edge" in row["flags"]


def test_the_optimum_against_an_axis_is_one_row_per_axis_value_in_order():
    parts = []
    for width, best in ((256, 1.0), (16, 4.0), (64, 2.0)):
        xs = np.geomspace(0.05, 50, 20)
        frame = _line(xs, np.exp((np.log(xs) - math.log(best)) ** 2))
        parts.append(frame.assign(width=width))
    frame = pd.concat(parts, ignore_index=True)
    frame.attrs = parts[0].attrs
    trend = analysis.optimum_trend(frame, along="width", n_boot=20)
    assert trend["width"].tolist() == [16, 64, 256]
    assert trend["x_opt"].tolist() == pytest.approx([4.0, 2.0, 1.0], rel=0.05)


def test_more_than_two_nuisance_parameters_ask_for_a_slice():
    frame = trials(n=40)
    frame = frame.assign(a=1.0, b=2.0)
    with pytest.raises(SpecError, match="at most 2 parameters besides x"):
        analysis.optimum(frame, nuisance=["lr", "a", "b"], n_boot=0)


def test_sweeps_of_one_experiment_pool_into_one_frame_with_a_sweep_column():
    a = _line(np.geomspace(0.05, 50, 10), np.ones(10)).assign(sweep="a", width=16)
    b = _line(np.geomspace(0.1, 80, 10), np.ones(10)).assign(sweep="b", width=64)
    for frame, name in ((a, "a"), (b, "b")):
        frame.attrs.update(sweep=name, experiment="sinusoid")
    b.attrs["search"] = {"sigma_inv": {"low": 0.1, "high": 200.0, "log": True}}
    pooled = analysis.pool([a, b])
    assert len(pooled) == 20 and sorted(pooled["sweep"].unique()) == ["a", "b"]
    assert pooled.attrs["sweeps"] == ["a", "b"]
    assert pooled.attrs["search"]["sigma_inv"] == {"low": 0.01, "high": 200.0, "log": True}
    assert analysis.optimum(pooled, n_boot=0)["width"].tolist() == [16, 64]


def test_sweeps_of_different_experiments_or_objectives_do_not_pool():
    a = _line(np.geomspace(0.05, 50, 5), np.ones(5))
    b = _line(np.geomspace(0.05, 50, 5), np.ones(5))
    a.attrs.update(sweep="a", experiment="sinusoid")
    b.attrs.update(sweep="b", experiment="gp")
    with pytest.raises(SpecError, match="sweeps 'a' and 'b' differ in experiment"):
        analysis.pool([a, b])
    b.attrs.update(experiment="sinusoid", objective_metric="ood_mse")
    with pytest.raises(SpecError, match="differ in objective_metric"):
        analysis.pool([a, b])
