"""The GP on the arithmetic data sets (paper 000 §3.1, §3.2, Table 1): closed form, Table 1's
trend in λ, the same points as the network, and the region metrics."""

from __future__ import annotations

import numpy as np
import pytest

from trainables import gp
from trainables.config import ConfigError
from trainables.data import regression


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

    def broken_for_long_scales(cfg, x, y, length_scale):
        if length_scale > 2:
            raise np.linalg.LinAlgError("not positive definite")
        return fit_one(cfg, x, y, length_scale)

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
        "log_marginal_likelihood", "length_scale_fit",
    }  # fmt: skip
    assert sinus["test_mse"].mode == "min" and sinus["log_marginal_likelihood"].mode == "max"
    assert sinus["test_std"].mode is None and sinus["length_scale_fit"].mode is None
    annulus = gp.Config(dataset="multiplication_annulus", fit_amplitude=True).metrics()
    assert {"hole_mse", "ring_std", "outside_mse", "amplitude_fit"} <= set(annulus)
    assert not any(m.final for m in annulus.values())


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
