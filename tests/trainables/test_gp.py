"""The GP on the arithmetic data sets (paper 000 §3.1, §3.2, Table 1): closed form, Table 1's
values and trend in λ, the fitted amplitude, the same points as the network, the region metrics,
and the sinusoid's clean-target errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.gaussian_process.kernels import RBF

from service.spec import load_spec
from trainables import gp
from trainables.config import ConfigError
from trainables.data import regression

# Table 1 (paper 000 A.2.1), GP rows: λ -> (train, test, o.o.d.) MSE
TABLE_1 = {
    0.2: (2.09e-14, 1.58e-03, 1.55),
    1.0: (3.67e-12, 1.12e-10, 9.29e-04),
    5.0: (1.18e-12, 2.12e-12, 4.24e-08),
    50.0: (2.43e-14, 3.04e-14, 6.97e-12),
}


def rbf(a, b, length_scale):
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.exp(-0.5 * d2 / length_scale**2)


@pytest.mark.parametrize("dataset", ["addition_disc", "multiplication_annulus"])
def test_fixed_length_scale_equals_closed_form_posterior_in_2d(dataset):
    cfg = gp.Config(
        dataset=dataset, length_scale=0.7, alpha=1e-6, train_points=40, test_points=30, grid_size=5
    )
    data = gp.make_data(cfg)
    (x, y), (xt, _) = data["train"], data["test"]
    x, y, xt = x[0], y[0].ravel(), xt[0]
    assert x.shape == (40, 2)
    model = gp.fit_one(cfg, x, y[:, None], 0.7)
    k_inv = np.linalg.inv(rbf(x, x, 0.7) + 1e-6 * np.eye(len(x)))
    k_star = rbf(xt, x, 0.7)
    mean, std = model.predict(xt, return_std=True)
    np.testing.assert_allclose(mean, k_star @ k_inv @ y, rtol=1e-6, atol=1e-8)
    var = 1.0 - np.einsum("ij,jk,ik->i", k_star, k_inv, k_star)
    np.testing.assert_allclose(std, np.sqrt(np.maximum(var, 0)), rtol=1e-4, atol=1e-6)


def test_disc_ood_error_falls_as_length_scale_grows():
    """Table 1: o.o.d. MSE of the GP on disc addition falls from λ = 0.2 to 1 to 5."""
    base = {"dataset": "addition_disc", "train_points": 128, "replicas": 2, "grid_size": 41}
    out = {ls: gp.run({**base, "length_scale": ls}) for ls in (0.2, 1.0, 5.0)}
    ood = [out[ls]["ood_mse"] for ls in (0.2, 1.0, 5.0)]
    assert ood[0] > 10 * ood[1] > 100 * ood[2], ood
    assert ood[0] > 0.1  # λ = 0.2 reverts to the zero mean off the data (Table 1: 1.55)
    assert out[1.0]["test_mse"] < 1e-6 < out[0.2]["test_mse"]


def test_gp_sees_the_networks_points_for_a_seed():
    net = regression.arithmetic_splits(
        regression.ArithmeticData(seed=5, replicas=2, domain="annulus")
    )
    cfg = gp.Config(seed=5, replicas=2, dataset="addition_annulus", train_points=128)
    ours = gp.make_data(cfg)
    np.testing.assert_array_equal(ours["train"][0], net["train"].x.double().numpy())
    np.testing.assert_array_equal(ours["train"][1], net["train"].y.double().numpy())
    assert set(ours) == {"train", "test", "grid"}


def test_annulus_reports_regions_std_and_a_surface():
    out = gp.run(
        {"dataset": "addition_annulus", "train_points": 64, "test_points": 50, "grid_size": 31,
         "length_scale": 1.0, "replicas": 2}
    )  # fmt: skip
    for region in ("ood", "hole", "ring", "outside"):
        assert f"{region}_mse/r1" in out and f"{region}_std" in out
    # the GP is sure on its data and unsure far from it (Fig. 2, bottom right)
    assert out["ring_std"] < out["hole_std"] and out["ring_std"] < out["outside_std"]
    assert out["ring_mse"] < out["outside_mse"]
    surface = out["artifacts"]["loss_surface"]
    assert surface["kind"] == "surface" and len(surface["z"]) == 31
    # Fig. 2 middle, as the network's: the bins below 0.5, weighted by points, give hole_mse
    series = {s["label"]: s for s in out["artifacts"]["error_vs_eccentricity"]["series"]}
    centres = torch.tensor(series["mean per bin"]["x"], dtype=torch.float64)
    mse = 10 ** -torch.tensor(series["−log10 of bin MSE"]["y"], dtype=torch.float64)
    points = regression.grid_points(31)
    _, count, _ = regression.radial_means(torch.zeros(1, len(points)), points)  # points per bin
    hole = centres < 0.5
    hole_mse = (count * mse)[hole].sum() / count[hole].sum()
    assert hole_mse == pytest.approx(out["hole_mse/r0"], rel=1e-6)
    assert np.isfinite(out["log_marginal_likelihood"])


def test_grid_metrics_match_a_hand_computation():
    cfg = gp.Config(dataset="multiplication_disc", train_points=30, test_points=10, grid_size=11)
    out = gp.run(cfg.to_dict())
    data = gp.make_data(cfg)
    model = gp.fit_one(cfg, *(a[0] for a in data["train"]), cfg.length_scale)
    x, y = data["grid"]
    err = (model.predict(x[0]) - y[0].ravel()) ** 2
    r2 = (x[0] ** 2).sum(1)
    assert out["ood_mse"] == pytest.approx(err[r2 > 1].mean(), rel=1e-9)
    assert "hole_mse" not in out  # regions belong to the annulus


def test_maximum_likelihood_prefers_long_length_scales_on_addition():
    """§3.1: with the fitted amplitude the ML length scale is long (the paper finds λ ~ 150)."""
    base = {"dataset": "addition_disc", "test_points": 20, "grid_size": 5}
    fixed = gp.run({**base, "length_scale": 1.0})
    fitted = gp.run({**base, "length_scale": 1.0, "fit_length_scale": True})
    assert fitted["length_scale_fit"] != 1.0
    assert fitted["log_marginal_likelihood"] > fixed["log_marginal_likelihood"]
    both = gp.run({**base, "fit_amplitude": True, "fit_length_scale": True})
    assert both["length_scale_fit"] > 20.0 and both["amplitude_fit"] > 10.0
    assert both["log_marginal_likelihood"] > fitted["log_marginal_likelihood"]
    assert both["diverged"] == 0.0


def test_noise_variance_defaults_per_dataset():
    assert gp.Config().noise_variance == 0.25**2
    assert gp.Config(dataset="addition_normal").noise_variance == 1e-10
    assert gp.Config(dataset="addition_normal", alpha=1e-3).noise_variance == 1e-3


def test_failed_cholesky_is_a_diverged_trial_naming_the_replica_and_its_length_scale(
    monkeypatch,
):
    fit_one = gp.fit_one

    def broken_for_long_scales(cfg, x, y, length_scale, seed):
        if length_scale > 2:
            raise np.linalg.LinAlgError("not positive definite")
        return fit_one(cfg, x, y, length_scale, seed)

    monkeypatch.setattr(gp, "fit_one", broken_for_long_scales)
    reports = []
    config = {"dataset": "addition_disc", "replicas": 3, "length_scale": [1.0, 2.5, 0.5]}
    out = gp.run({**config, "grid_size": 5}, lambda s, m: reports.append((s, m)))
    assert out["diverged"] == 1.0 and "not positive definite" in out["failure_reason"]
    assert "replica 1 (λ=2.5)" in out["failure_reason"]
    assert reports == [(1, out)]


def test_each_replica_fits_with_its_own_length_scale():
    base = {"dataset": "addition_annulus", "train_points": 40, "test_points": 20, "grid_size": 9}
    together = gp.run({**base, "seed": 2, "replicas": 3, "length_scale": [0.3, 1.0, 3.0]})
    for r, ls in enumerate((0.3, 1.0, 3.0)):
        alone = gp.run({**base, "seed": 2 + r, "length_scale": ls})
        for key in ("test_mse", "hole_std", "log_marginal_likelihood", "length_scale_fit"):
            assert together[f"{key}/r{r}"] == pytest.approx(alone[f"{key}/r0"], rel=1e-12), key
    assert together["length_scale_fit/r2"] == 3.0  # held fixed
    assert "λ=0.3" in together["artifacts"]["loss_surface"]["title"]  # replica 0's surface


def test_length_scales_must_be_positive_for_every_replica():
    with pytest.raises(ConfigError, match="`length_scale` must be > 0"):
        gp.Config.from_mapping({"replicas": 2, "length_scale": [1.0, 0.0]})
    with pytest.raises(ConfigError, match="one value per replica"):
        gp.Config.from_mapping({"replicas": 2, "length_scale": [1.0, 2.0, 3.0]})


def test_declared_metrics_are_what_a_run_reports():
    sinus = gp.Config().metrics()
    assert set(sinus) == {
        *(f"{p}_{k}" for p in ("train", "test", "ood") for k in ("mse", "std")),
        "test_mse_clean", "ood_mse_clean", "log_marginal_likelihood", "length_scale_fit",
    }  # fmt: skip
    assert sinus["test_mse"].mode == "min" and sinus["log_marginal_likelihood"].mode == "max"
    assert sinus["test_mse_clean"].mode == "min" and sinus["ood_mse_clean"].mode == "min"
    assert sinus["test_std"].mode is None and sinus["length_scale_fit"].mode is None
    out = gp.run({"train_points": 20, "test_points": 10, "ood_points": 10, "fit_amplitude": True})
    reported = {k for k in out if "/" not in k and k not in ("diverged", "artifacts")}
    assert reported == set(gp.Config(fit_amplitude=True).metrics())
    annulus = gp.Config(dataset="multiplication_annulus", fit_amplitude=True).metrics()
    assert {"hole_mse", "ring_std", "outside_mse", "amplitude_fit"} <= set(annulus)
    assert "test_mse_clean" not in annulus  # noiseless targets: the plain MSE is the clean one
    assert not any(m.final for m in annulus.values())


# --- Table 1 and the fitted amplitude -------------------------------------------------------------
def test_table_1_gp_rows_within_3x_of_the_paper():
    """The shipped spec's cells (λ = 0.2, 1, 5, 50; 8 seeds, fitted C) against Table 1.

    One entry is held to less: the training MSE at λ = 0.2 is the nugget's residual (next test)
    and comes out ~0.09x the paper's, so it is only asserted below the paper's and above 1/30 of
    it; the other eleven are within 3x (measured: 0.74x to 1.69x).
    """
    spec = load_spec("gp_table1")
    assert [c["length_scale"] for c in spec.cells()] == list(TABLE_1)
    assert not spec.search and spec.fixed["fit_amplitude"] and spec.fixed["train_points"] == 128
    for cell in spec.cells():
        out = gp.run(spec.trial_config(cell, {}))
        paper = TABLE_1[cell["length_scale"]]
        ours = [out["train_mse"], out["test_mse"], out["ood_mse"]]
        for split, mine, theirs in zip(("train", "test", "ood"), ours, paper):
            where = f"λ={cell['length_scale']} {split}: {mine:.3g} vs the paper's {theirs:.3g}"
            if cell["length_scale"] == 0.2 and split == "train":
                assert theirs / 30 < mine < theirs, where
            else:
                assert theirs / 3 < mine < 3 * theirs, where


def test_training_error_at_short_length_scale_is_the_nuggets():
    """At λ = 0.2 the training MSE is α²·|(CK + αI)⁻¹y|²/N: doubling α quadruples it per seed,
    while the fitted C and the test MSE stay put (why Table 1's 2e-14 is out of reach)."""
    base = {"dataset": "addition_disc", "train_points": 128, "test_points": 200, "grid_size": 5,
            "fit_amplitude": True, "length_scale": 0.2, "replicas": 4}  # fmt: skip
    one, two = gp.run(base), gp.run({**base, "alpha": 2e-10})
    for r in range(4):
        ratio = two[f"train_mse/r{r}"] / one[f"train_mse/r{r}"]
        assert 3.3 < ratio < 4.05, (r, ratio)
        assert two[f"test_mse/r{r}"] == pytest.approx(one[f"test_mse/r{r}"], rel=1e-3)
        assert two[f"amplitude_fit/r{r}"] == pytest.approx(one[f"amplitude_fit/r{r}"], rel=1e-3)


@pytest.mark.parametrize("length_scale,optimum", [(5.0, 12.6), (50.0, 1.46e3)])
def test_fitted_amplitude_is_the_likelihood_maximum_at_fixed_length_scale(length_scale, optimum):
    """With λ fixed, sklearn's L-BFGS from C = 1 stops there on this ill-conditioned likelihood;
    ours starts at the maximum: it beats C = 1 by far and every C a few percent either side."""
    base = {"dataset": "addition_disc", "train_points": 128, "test_points": 20, "grid_size": 5,
            "length_scale": length_scale}  # fmt: skip
    fitted, plain = gp.run({**base, "fit_amplitude": True}), gp.run(base)
    c = fitted["amplitude_fit"]
    assert c == pytest.approx(optimum, rel=0.05)
    assert fitted["log_marginal_likelihood"] > plain["log_marginal_likelihood"] + 50
    cfg = gp.Config.from_mapping(base)
    x, y = (a[0] for a in gp.make_data(cfg)["train"])
    k, y = RBF(length_scale)(x), y.ravel()
    best = gp.log_marginal_likelihood(c * k, y, cfg.noise_variance)
    assert best == pytest.approx(fitted["log_marginal_likelihood"], abs=1e-3)
    for near in (0.9 * c, 0.97 * c, 1.03 * c, 1.1 * c):
        assert gp.log_marginal_likelihood(near * k, y, cfg.noise_variance) < best
    assert fitted["ood_mse"] < plain["ood_mse"] / 10  # what Table 1's λ = 5, 50 rows need


def test_ml_amplitude_ignores_the_rounding_spike_before_the_cholesky_fails():
    """Seed 11 at λ = 50 has a close pair of points: just below the C where k + αI stops being
    positive definite, rounding gives a likelihood higher than the real maximum; the first
    maximum from below is the real one, and sklearn's final Cholesky succeeds there."""
    cfg = gp.Config(dataset="addition_disc", train_points=128, seed=11, length_scale=50.0)
    x, y = (a[0] for a in gp.make_data(cfg)["train"])
    k, y = RBF(50.0)(x), y.ravel()
    lml = [gp.log_marginal_likelihood(c * k, y, 1e-10) for c in gp.AMPLITUDE_GRID]
    c = gp.ml_amplitude(k, y, 1e-10)
    assert 1e3 < c < 3e3 and max(lml) > gp.log_marginal_likelihood(c * k, y, 1e-10) + 1
    assert gp.AMPLITUDE_GRID[int(np.argmax(lml))] > 1e4  # the spike
    out = gp.run({**cfg.to_dict(), "fit_amplitude": True, "test_points": 20, "grid_size": 5})
    assert out["diverged"] == 0.0 and out["amplitude_fit"] == pytest.approx(c, rel=0.05)


def test_restarts_are_seeded_by_the_replica_and_only_raise_the_likelihood():
    base = {"dataset": "addition_disc", "train_points": 128, "test_points": 20, "grid_size": 5,
            "fit_length_scale": True, "fit_amplitude": True}  # fmt: skip
    assert gp.Config(**base).restarts == 5 and gp.Config(fit_amplitude=True).restarts == 0
    together = gp.run({**base, "seed": [3, 0], "replicas": 2})
    alone = gp.run({**base, "seed": 3})
    assert together["length_scale_fit/r0"] == alone["length_scale_fit/r0"]
    assert together["amplitude_fit/r0"] == alone["amplitude_fit/r0"]
    none = gp.run({**base, "seed": [3, 0], "replicas": 2, "optimizer_restarts": 0})
    for r in range(2):  # the first start is the same; the best of more starts is never worse
        lml = together[f"log_marginal_likelihood/r{r}"]
        assert lml >= none[f"log_marginal_likelihood/r{r}"]
    assert together["log_marginal_likelihood"] > none["log_marginal_likelihood"] + 1
    with pytest.raises(ConfigError, match="`optimizer_restarts` must be >= 0 or null"):
        gp.Config.from_mapping({"optimizer_restarts": -1})


# --- the sinusoid's clean-target errors -----------------------------------------------------------
def test_clean_mse_is_noisy_mse_less_the_noise_variance():
    """On fresh points ε is independent of the fit: E[noisy] = clean + σ². The sample gap has
    std √((2σ⁴ + 4σ²·clean)/N) (the mean of ε², and the cross term 2(f̂ - sin x)ε); 4 stds."""
    n, var = 20000, 0.25**2
    out = gp.run({"length_scale": 1.0, "replicas": 2, "test_points": n, "ood_points": n})
    for r in range(2):
        for split in ("test", "ood"):
            noisy, clean = out[f"{split}_mse/r{r}"], out[f"{split}_mse_clean/r{r}"]
            std = np.sqrt((2 * var**2 + 4 * var * clean) / n)
            assert abs(noisy - clean - var) < 4 * std, (split, r, noisy, clean)
    assert out["test_mse_clean"] < var / 4  # at a good λ the GP beats the noise floor by far
    assert out["ood_mse_clean"] > 10 * out["test_mse_clean"]  # and reverts to 0 off the data


# --- moved from test_experiments.py (the GP against the sinusoid's data and its closed form) ------
def test_gp_and_sinusoid_see_the_same_points_for_a_seed():
    nn_data = regression.sinusoid_splits(
        regression.SinusoidData(seed=4, replicas=2, train_points=30)
    )
    gp_data = gp.make_data(gp.Config(seed=4, replicas=2, train_points=30))
    np.testing.assert_allclose(gp_data["train"][0], nn_data["train"].x.double().numpy())


def test_gp_fixed_length_scale_equals_closed_form_posterior_mean():
    cfg = gp.Config(length_scale=0.7, replicas=1, train_points=25, test_points=10, ood_points=10)
    (x, y), (xt, _) = gp.make_data(cfg)["train"], gp.make_data(cfg)["test"]
    x, y, xt = x[0], y[0].ravel(), xt[0]
    model = gp.fit_one(cfg, x, y[:, None], 0.7)

    def k(a, b):
        return np.exp(-0.5 * (a - b.T) ** 2 / 0.7**2)

    mean = k(xt, x) @ np.linalg.solve(k(x, x) + cfg.noise_variance * np.eye(len(x)), y)
    np.testing.assert_allclose(model.predict(xt), mean, rtol=1e-6, atol=1e-8)


def test_gp_metrics_and_interior_optimum_in_length_scale():
    mse = {ls: gp.run({"length_scale": ls, "replicas": 2})["test_mse"] for ls in (0.05, 1.0, 20.0)}
    assert mse[1.0] < mse[0.05] and mse[1.0] < mse[20.0]
