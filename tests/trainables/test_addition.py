"""Addition (paper 000 §3.1-3.4, A.2.3-A.2.5): the class holds the solution, f_sym commutes,
the regions partition the plane, samplers stay in their domains, and training works."""

from __future__ import annotations

import json
import math

import pytest
import torch

from trainables import addition, engine
from trainables.config import ConfigError
from trainables.data import regression

TINY = {
    "width": 16,
    "steps": 40,
    "eval_every": 20,
    "train_points": 32,
    "test_points": 64,
    "grid_size": 21,
}


def load_eq1(model, **weights):
    w1, b1, w2, b2 = addition.eq1_solution(**weights)
    first, second = model.layers
    with torch.no_grad():
        first.weight.copy_(w1.expand_as(first.weight))
        first.bias.copy_(b1.expand_as(first.bias))
        second.weight.copy_(w2.expand_as(second.weight))
        second.bias.copy_(b2.expand_as(second.bias))


@pytest.mark.parametrize("domain", ["disc", "annulus", "normal"])
def test_eq1_weights_add_exactly_on_every_domain(domain):
    """Eq. 1: a width-4 ReLU net with hand-set weights is x1 + x2, in and out of the domain."""
    cfg = addition.Config(
        width=4, activation="relu", normalise=False, domain=domain, replicas=2,
        train_points=200, test_points=500, grid_size=41,
    )  # fmt: skip
    model = addition.make_model(cfg)
    load_eq1(model)
    metrics = addition.evaluate(model, addition.make_data(cfg), domain)
    expected = {"train_mse", "test_mse", "ood_mse"}
    if domain == "annulus":
        expected |= {"hole_mse", "ring_mse", "outside_mse"}
    assert set(metrics) == expected
    for name, value in metrics.items():
        assert value.max().item() < 1e-12, name
    # far outside the square too: the solution is global, not fitted
    x = torch.tensor([[100.0, -3.0], [-7.5, -250.0]]).expand(2, 2, 2)
    torch.testing.assert_close(model(x), regression.target(x, "add"), rtol=0, atol=1e-5)


def test_eq1_rejects_signs_that_do_not_add():
    with pytest.raises(ConfigError, match="`beta, delta` must be < 0"):
        addition.eq1_solution(beta=0.5)


def test_random_weights_do_not_add():
    cfg = addition.Config(**{**TINY, "width": 4, "activation": "relu", "normalise": False})
    metrics = addition.evaluate(addition.make_model(cfg), addition.make_data(cfg), "disc")
    assert metrics["test_mse"].item() > 1e-3


@pytest.mark.parametrize("activation,normalise", [("tanh", True), ("relu", False)])
def test_symmetrised_net_is_exactly_commutative(activation, normalise):
    cfg = addition.Config(
        width=32, activation=activation, normalise=normalise, symmetrise=True, replicas=3
    )
    model = addition.make_model(cfg)
    x = torch.randn(3, 500, 2) * 2
    a, b = model(x), model(x.flip(-1))
    assert torch.equal(a, b)
    inner = model.inner(x)
    assert not torch.allclose(inner, model.inner(x.flip(-1)), atol=1e-4)  # f alone is not


def test_regions_partition_the_grid():
    points = regression.grid_points(61)
    assert points.shape == (61 * 61, 2)
    assert points.min().item() == -1.5 and points.max().item() == 1.5
    masks = regression.region_masks(points)
    hole, ring, outside, ood = (masks[k] for k in ("hole", "ring", "outside", "ood"))
    r = points.double().norm(dim=1)
    covered = hole.int() + ring.int() + outside.int()
    assert covered.max().item() == 1  # no overlap
    # they cover the disc of radius 1.5 (away from float ties on its rim) and nothing else
    clear = (r - 1.5).abs() > 1e-6
    assert (covered[clear] == (r[clear] < 1.5).int()).all()
    assert int(covered.sum()) == int((points.double().pow(2).sum(1) <= 2.25).sum())
    # o.o.d. is the square minus the closed unit disc; with hole and ring it covers the grid
    assert (ood.int() + hole.int() + ring.int() == 1).all()
    assert (outside <= ood).all() and ((ood & ~outside)[clear] == (r > 1.5)[clear]).all()
    assert ((r < 0.5) == hole).all() and ((r <= 1.0) == (hole | ring)).all()
    # boundaries: r = 0.5 and r = 1 are on the ring (the annulus is closed)
    on = regression.region_masks(torch.tensor([[0.5, 0.0], [0.0, -1.0], [-0.5, 0.0], [0.0, 1.5]]))
    assert on["ring"].tolist() == [True, True, True, False]
    assert on["outside"].tolist() == [False, False, False, True]  # r = 1.5 exactly


def test_region_means_are_per_region_averages():
    points = torch.tensor([[0.1, 0.0], [0.7, 0.0], [1.2, 0.0], [1.4, 1.4]])
    values = torch.tensor([[1.0, 2.0, 3.0, 5.0]])
    out = regression.region_means(values, points, "annulus")
    assert {k: v.item() for k, v in out.items()} == {
        "ood_mse": 4.0, "hole_mse": 1.0, "ring_mse": 2.0, "outside_mse": 3.0,
    }  # fmt: skip
    assert set(regression.region_means(values, points, "disc")) == {"ood_mse"}


def test_samplers_land_in_their_domains():
    g = torch.Generator().manual_seed(0)
    disc = regression.arithmetic_inputs(g, 20000, "disc")
    r = disc.norm(dim=1)
    assert r.max().item() <= 1 + 1e-6
    assert (r < 0.5).float().mean().item() == pytest.approx(0.25, abs=0.015)  # uniform in area
    ring = regression.arithmetic_inputs(g, 20000, "annulus").norm(dim=1)
    assert ring.min().item() >= 0.5 - 1e-6 and ring.max().item() <= 1 + 1e-6
    # uniform on the annulus: P(r < 0.75) = (0.75² - 0.25) / 0.75
    assert (ring < 0.75).float().mean().item() == pytest.approx(0.3125 / 0.75, abs=0.015)
    normal = regression.arithmetic_inputs(g, 20000, "normal")
    assert normal.mean(0).abs().max().item() < 0.03
    assert normal.std(0).sub(1).abs().max().item() < 0.03
    angles = torch.atan2(disc[:, 1], disc[:, 0])
    assert (angles > 0).float().mean().item() == pytest.approx(0.5, abs=0.015)


def test_targets_and_data_shapes():
    x = torch.tensor([[2.0, 3.0], [-1.0, 0.5]])
    assert regression.target(x, "add").flatten().tolist() == [5.0, -0.5]
    assert regression.target(x, "multiply").flatten().tolist() == [6.0, -0.5]
    cfg = regression.ArithmeticData(replicas=2, operation="multiply", grid_size=11)
    splits = regression.arithmetic_splits(cfg)
    assert splits["train"].x.shape == (2, 128, 2) and splits["train"].y.shape == (2, 128, 1)
    torch.testing.assert_close(splits["test"].y, regression.target(splits["test"].x, "multiply"))
    assert splits["grid"].x.shape == (2, 121, 2)
    assert not torch.equal(splits["train"].x[0], splits["train"].x[1])  # replicas differ


def test_loss_surface_is_log_error_on_the_grid():
    cfg = addition.Config(width=8, activation="relu", normalise=False, replicas=2)
    model = addition.make_model(cfg)
    axis, z = addition.loss_surface(model, "add", grid_size=7)
    assert axis.tolist() == pytest.approx([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5])
    assert z.shape == (2, 7, 7)
    i, j = 1, 5  # z[r, i, j] is at (x1, x2) = (axis[j], axis[i])
    point = torch.tensor([[[axis[j], axis[i]]]]).expand(2, 1, 2)
    expected = torch.log10((model(point) - axis[j] - axis[i]).pow(2).double())[:, 0, 0]
    torch.testing.assert_close(z[:, i, j], expected, rtol=1e-5, atol=1e-5)
    exact = addition.make_model(addition.Config(width=4, activation="relu", normalise=False))
    load_eq1(exact)
    _, z_exact = addition.loss_surface(exact, "add", grid_size=7)
    assert torch.isfinite(z_exact).all() and z_exact.max().item() < -10


def test_training_reduces_the_loss_and_reports_regions():
    cfg = {**TINY, "steps": 150, "eval_every": 50, "lr": 1e-2, "domain": "annulus"}
    before = addition.evaluate(
        addition.make_model(addition.Config(**cfg)),
        addition.make_data(addition.Config(**cfg)),
        "annulus",
    )
    reports = []
    out = addition.run(cfg, lambda s, m: reports.append(s))
    assert reports == [50, 100, 150]
    assert out["train_mse"] < 0.2 * before["train_mse"].item()
    assert {"hole_mse", "ring_mse", "outside_mse", "ood_mse/r0"} <= set(out)
    assert out["artifacts"]["loss_surface"]["kind"] == "surface"


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"fresh_batches": True, "batch_size": 16, "domain": "normal", "operation": "multiply"},
        {"symmetrise": True, "activation": "relu", "normalise": False},
    ],
    ids=["finite", "fresh", "symmetrised"],
)
def test_replicas_train_exactly_like_solo_runs(extra):
    cfg = {**TINY, **extra}
    together = addition.run({**cfg, "seed": 3, "replicas": 3})
    for r in range(3):
        alone = addition.run({**cfg, "seed": 3 + r, "replicas": 1})
        for key, value in alone.items():
            if key.endswith("/r0"):
                base = key[: -len("/r0")]
                assert together[f"{base}/r{r}"] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_fresh_batches_draw_new_points_every_step():
    cfg = addition.Config(fresh_batches=True, batch_size=8, replicas=2, domain="annulus")
    draw = engine.batch_source(addition.make_batches(cfg), {}, cfg.seeds, torch.device("cpu"))
    (x1, y1), (x2, _) = draw(1), draw(2)
    assert x1.shape == (2, 8, 2) and not torch.equal(x1, x2)
    assert not torch.equal(x1[0], x1[1])  # each replica from its own seed
    assert x1.norm(dim=-1).min().item() >= 0.5 - 1e-6
    torch.testing.assert_close(y1, regression.target(x1, "add"))
    assert addition.make_batches(addition.Config()) == engine.FullBatch()


def test_declared_metrics_follow_the_domain():
    assert set(addition.Config().metrics()) == {"train_mse", "test_mse", "ood_mse"}
    annulus = addition.Config(domain="annulus").metrics()
    assert set(annulus) == {f"{p}_mse" for p in ("train", "test", "ood", "hole", "ring", "outside")}
    assert {m.mode for m in annulus.values()} == {"min"}
    assert not any(m.final for m in annulus.values())


def test_config_rules():
    with pytest.raises(ConfigError, match="`domain` must be one of"):
        addition.Config.from_mapping({"domain": "square"})
    with pytest.raises(ConfigError, match="`operation` must be one of"):
        addition.Config.from_mapping({"operation": "subtract"})
    with pytest.raises(ConfigError, match="`batch_size` must be >= 1, but got 0"):
        addition.Config.from_mapping({"batch_size": 0})
    assert math.isclose(addition.Config().lr, 1e-3)


def test_radial_means_know_r_squared_on_a_coarse_grid():
    """Grid 3: the origin, 4 edge midpoints at r = 1.5 (on a bin edge) and 4 corners at 1.5√2."""
    points = regression.grid_points(3)
    r2 = points.double().pow(2).sum(dim=1)
    centres, count, means = regression.radial_means(torch.stack([r2, torch.ones(9)]), points)
    assert centres.tolist() == pytest.approx([0.025, 1.525, 2.125])
    assert count.tolist() == [1, 4, 4]
    assert means[0].tolist() == pytest.approx([0.0, 2.25, 4.5])
    assert means[1].tolist() == [1.0, 1.0, 1.0]


def test_radial_means_on_circles_at_bin_centres_are_r_squared():
    radii = torch.tensor([0.025, 0.475, 0.525, 0.975, 1.025, 2.075], dtype=torch.float64)
    angles = torch.linspace(0, 2 * math.pi, 7, dtype=torch.float64)[:-1]
    points = torch.stack([radii[:, None] * angles.cos(), radii[:, None] * angles.sin()], dim=-1)
    points = points.reshape(-1, 2)
    centres, count, means = regression.radial_means(points.pow(2).sum(1)[None], points, per_unit=20)
    torch.testing.assert_close(centres, radii)
    assert count.tolist() == [6] * 6
    torch.testing.assert_close(means[0], radii.pow(2), rtol=0, atol=1e-12)
    # 10 bins per unit: 0.975 and 1.025 straddle 1.0; 0.475 and 0.525 straddle 0.5
    centres, _, _ = regression.radial_means(points.norm(dim=1)[None], points, per_unit=10)
    assert centres.tolist() == pytest.approx([0.05, 0.45, 0.55, 0.95, 1.05, 2.05])


def test_radial_bins_add_up_to_the_region_means():
    """Bins of 0.05 put 0.5 and 1 on edges: hole and ring are sums of whole bins."""
    points = regression.grid_points(101)
    r2 = points.double().pow(2).sum(dim=1)
    err = r2 * (1 + torch.sin(7 * points[:, 0].double()))  # anything not radial
    centres, count, means = regression.radial_means(err[None], points)
    assert int(count.sum()) == 101 * 101 and len(centres) == 43  # [0, 0.05) … [2.1, 2.15)
    mass = count * means[0]
    regions = regression.region_means(err[None], points, "annulus")
    for name, inside in [("hole", centres < 0.5), ("ring", (centres > 0.5) & (centres < 1)),
                         ("ood", centres > 1)]:  # fmt: skip
        total = mass[inside].sum() / count[inside].sum()
        assert total.item() == pytest.approx(regions[f"{name}_mse"].item(), rel=1e-12), name
    k = 17  # one bin by brute force
    lo, hi = centres[k] - 0.025, centres[k] + 0.025
    inside = (r2 >= lo**2) & (r2 < hi**2)
    assert means[0, k].item() == pytest.approx(err[inside].mean().item(), rel=1e-12)


def test_eccentricity_plot_averages_logs_and_logs_the_mse():
    points = torch.tensor([[0.01, 0.0], [0.0, 0.01], [0.72, 0.0], [1.22, 0.0]])
    err = torch.tensor([1e-2, 1e-4, 1e-6, 0.0])  # an exact point: floored at 1e-30
    plot = regression.eccentricity_plot(err, points, "annulus", "t")
    series = {s["label"]: s for s in plot["series"]}
    assert plot["kind"] == "curves" and plot["title"] == "t"
    assert series["mean per bin"]["x"] == [0.025, 0.725, 1.225]
    assert series["mean per bin"]["y"] == [3.0, 6.0, 30.0]  # the mean of −log10 error
    assert series["−log10 of bin MSE"]["y"] == pytest.approx([-math.log10(5.05e-3), 6.0, 30.0])
    assert series["hole (o.o.d., inside the hull)"]["y"] == [2.0, 4.0]
    assert series["ring (i.i.d.)"]["x"] == [0.72] and series["o.o.d. (outside the hull)"]["markers"]
    disc = regression.eccentricity_plot(err.numpy(), points.numpy(), "disc")
    assert [s["label"] for s in disc["series"]][:2] == ["r ≤ 1", "o.o.d. (r > 1)"]
    assert len(disc["series"][0]["x"]) == 3


def test_run_hands_over_error_against_eccentricity(tmp_path):
    from service.plots import render_artifact

    cfg = {**TINY, "domain": "annulus"}
    out = addition.run(cfg)
    plot = out["artifacts"]["error_vs_eccentricity"]
    series = {s["label"]: s for s in plot["series"]}
    # the bins the 21 × 21 grid (spacing 0.15) fills, found independently
    r = regression.grid_points(21).double().norm(dim=1)
    filled = torch.unique(torch.floor(r * 20 + 1e-9))
    assert series["mean per bin"]["x"] == pytest.approx(((filled + 0.5) / 20).tolist())
    assert sum(len(series[k]["x"]) for k in list(series)[:3]) == 21 * 21  # every point a dot
    # the bins below 0.5 make up the hole: their MSEs, weighted by points, give hole_mse
    centres = torch.tensor(series["mean per bin"]["x"])
    mse = 10 ** -torch.tensor(series["−log10 of bin MSE"]["y"], dtype=torch.float64)
    count = torch.tensor([int(((r >= c - 0.025) & (r < c + 0.025)).sum()) for c in centres])
    hole = centres < 0.5
    assert (count * mse)[hole].sum() / count[hole].sum() == pytest.approx(out["hole_mse"], rel=1e-4)
    png = render_artifact(json.loads(json.dumps(plot)), tmp_path / "e.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_an_eccentricity_plot_draws_at_most_max_dots_but_bins_every_point():
    points = regression.grid_points(101)  # 10,201 points
    err = points.double().pow(2).sum(dim=1)  # squared error r²: each bin's mean is known
    plot = regression.eccentricity_plot(err, points, "disc")
    series = {s["label"]: s for s in plot["series"]}
    dots = sum(len(series[k]["x"]) for k in ("r ≤ 1", "o.o.d. (r > 1)"))
    assert regression.MAX_DOTS // 2 < dots <= regression.MAX_DOTS
    centres, count, means = regression.radial_means(err[None], points)
    assert int(count.sum()) == 101 * 101
    assert series["mean per bin"]["x"] == pytest.approx(centres.tolist())
