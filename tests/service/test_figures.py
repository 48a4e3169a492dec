"""Paper figures on hand-built trials: the files they write, and what a reader finds on them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.legend import Legend
from matplotlib.text import Text

from service import analysis, figures
from service import conventions as cv
from service.optimum import OptimumFit

OPTIMA = {16: 4.0, 32: 2.0, 64: 1.0, 128: 0.5, 256: 0.25}  # width -> the best σ⁻¹
FLOOR = 0.0625


def _trials(optima=OPTIMA, n=14, replicas=3, x="sigma_inv", span=(0.02, 20), seed=0, **attrs):
    """test_mse = floor + (log x - log x*)² per width, with 5 % seed noise, plus a failed trial."""
    rng = np.random.default_rng(seed)
    rows = []
    for width, best in optima.items():
        for i, value in enumerate(np.geomspace(*span, n)):
            true = FLOOR + (math.log(value) - math.log(best)) ** 2
            draws = true * np.exp(0.05 * rng.standard_normal(replicas))
            rows.append({"run_id": f"{width}-{i}", "trial_id": f"t{width}-{i:02d}",
                         "status": "FINISHED", "width": width, "steps": 500, x: float(value),
                         "test_mse": float(draws.mean()),
                         **{cv.replica_metric("test_mse", k): float(d) for k, d in
                            enumerate(draws)}})  # fmt: skip
    failed = {**rows[0], "run_id": "failed", "trial_id": "t-failed", "status": "FAILED"}
    frame = pd.DataFrame([*rows, {**failed, "test_mse": 1e6}])
    frame.attrs.update(
        experiment="sinusoid",
        axes=["width"],
        objective_metric="test_mse",
        objective_mode="min",
        **attrs,
    )
    return frame


def _fit(trials: pd.DataFrame, x: str = "sigma_inv", **kwargs) -> OptimumFit:
    return analysis.optimum_fit(trials, x=x, metric="test_mse", n_boot=10, **kwargs)


def _pick(widths) -> pd.DataFrame:
    return _trials({w: OPTIMA[w] for w in widths})


@pytest.fixture(scope="module")
def five() -> tuple[pd.DataFrame, OptimumFit]:
    trials = _trials()
    return trials, _fit(trials)


@pytest.fixture(scope="module")
def two() -> tuple[pd.DataFrame, OptimumFit]:
    trials = _pick([16, 64])
    return trials, _fit(trials)


@pytest.fixture(scope="module")
def gp() -> figures.Overlay:
    trials = _trials({0: 0.7}, replicas=1, x="length_scale").drop(columns=["width"])
    trials.attrs["axes"] = []
    return figures.Overlay("GP", trials, _fit(trials, x="length_scale"), "length_scale")


def _build(trials, fit, **kwargs):
    return figures._build_optimum(trials, fit, x="sigma_inv", metric="test_mse", **kwargs)


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.findobj(Legend) for t in legend.get_texts()]


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text)]


def _trend(flags=("", "edge", "", "")) -> pd.DataFrame:
    widths = [16, 64, 256, 1024]
    x_opt = np.array([4.0, 2.0, 1.0, 0.5])
    return pd.DataFrame({"width": widths, "x_opt": x_opt, "ci_low": x_opt * 0.8,
                         "ci_high": x_opt * 1.3, "metric_at_opt": 0.07, "method": "profile(lr)",
                         "fit": "smooth", "at_edge": [f == "edge" for f in flags],
                         "flags": list(flags)})  # fmt: skip


# --------------------------------------------------------------------------------------------
# files


@pytest.mark.parametrize(
    "suffix, magic",
    [(".png", b"\x89PNG\r\n\x1a\n"), (".pdf", b"%PDF"), (".svg", b"<svg")],
)
def test_each_format_writes_a_valid_file(tmp_path, two, suffix, magic):
    trials, fit = two
    optimum = figures.plot_optimum(trials, fit, tmp_path / "a" / f"opt{suffix}", x="sigma_inv",
                                   metric="test_mse")  # fmt: skip
    trend = figures.plot_optimum_trend(_trend(), tmp_path / f"trend{suffix}", x="sigma_inv",
                                       along="width")  # fmt: skip
    for path in (optimum, trend):
        data = path.read_bytes()
        assert magic in data[:400] if suffix == ".svg" else data.startswith(magic)
    if suffix == ".png":  # 300 dpi: the PNG's width (IHDR) is the figure's width in inches × 300
        inches = _build(trials, fit).get_size_inches()[0]
        assert int.from_bytes(optimum.read_bytes()[16:20], "big") == round(inches * 300)
    if suffix == ".pdf":  # TrueType fonts embedded, not Type 3
        assert b"/FontFile2" in optimum.read_bytes() and b"/Type3" not in optimum.read_bytes()


@pytest.mark.parametrize("name", ["fig.jpg", "fig", "fig.PNG.bak"])
def test_a_bad_suffix_raises_naming_the_three_formats_and_writes_nothing(tmp_path, two, name):
    trials, fit = two
    with pytest.raises(ValueError, match=r"\.png, \.pdf or \.svg"):
        figures.plot_optimum(trials, fit, tmp_path / name, x="sigma_inv", metric="test_mse")
    with pytest.raises(ValueError, match=r"\.png, \.pdf or \.svg"):
        figures.plot_optimum_trend(_trend(), tmp_path / name, x="sigma_inv", along="width")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------
# the optimum figure


@pytest.mark.parametrize("widths, panels", [([16, 64], 1), ([16, 32, 64], 1),
                                            ([16, 32, 64, 128], 4), (list(OPTIMA), 5)])  # fmt: skip
def test_four_groups_or_more_get_one_panel_each(widths, panels):
    trials = _pick(widths)
    fit = _fit(trials)
    fig = _build(trials, fit)
    assert len(fig.axes) == panels
    entries = [f"width={w}: σ⁻¹* = {x:.3g}" for w, x in zip(fit.table["width"], fit.table["x_opt"])]
    if panels == 1:  # one panel: the groups are told apart in the legend
        assert set(entries) <= set(_legend_texts(fig))
    else:  # small multiples: each panel's title names its group, on shared axes
        assert [ax.get_title() for ax in fig.axes] == entries
        assert not set(entries) & set(_legend_texts(fig))
        assert all(ax.get_shared_x_axes().joined(fig.axes[0], ax) for ax in fig.axes)
        assert all(ax.get_shared_y_axes().joined(fig.axes[0], ax) for ax in fig.axes)
        # the lowest panel of every column shows its x tick labels, panels above others do not
        lowest = [ax.xaxis.get_tick_params()["labelbottom"] for ax in fig.axes]
        assert lowest == [i + 3 >= panels for i in range(panels)]


@pytest.mark.parametrize(
    "name, text",
    [("sigma_inv", "σ⁻¹ (length scale)"), ("length_scale", "λ (RBF length scale)"),
     ("lr", "learning rate"), ("width", "width"), ("entanglement", "entanglement φ_max"),
     ("test_mse", "test MSE"), ("train_mse", "train MSE"), ("ood_mse", "o.o.d. MSE"),
     ("test_acc", "test accuracy"), ("depth", "depth")],
)  # fmt: skip
def test_labels_come_from_names(name, text):
    assert figures.label(name) == text


def test_axes_are_labelled_by_name_log_log_and_overridable(two, five, gp):
    trials, fit = two
    ax = _build(trials, fit).axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("σ⁻¹ (length scale)", "test MSE")
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    ax = _build(trials, fit, x_label="1/σ", metric_label="MSE on test").axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("1/σ", "MSE on test")
    ax = _build(trials, fit, overlays=[gp]).axes[0]
    assert ax.get_xlabel() == "σ⁻¹ (length scale) / λ (RBF length scale)"
    fig = _build(*five)  # small multiples: one label for the figure, not one per panel
    assert {ax.get_xlabel() for ax in fig.axes} == {""}
    assert {"σ⁻¹ (length scale)", "test MSE"} <= set(_texts(fig))


def test_an_axis_of_two_decades_or_less_reads_in_decimals():
    def x_ticks(trials):
        ax = _build(trials, _fit(trials)).axes[0]
        ax.figure.canvas.draw()
        lows, highs = ax.get_xlim()
        ticks = [*ax.xaxis.get_majorticklabels(), *ax.xaxis.get_minorticklabels()]
        return {t.get_text() for t in ticks if lows <= t.get_position()[0] <= highs} - {""}

    assert x_ticks(_trials({16: 1.0}, span=(0.1, 10))) == {"0.1", "0.2", "0.5", "1", "2", "5",
                                                           "10"}  # fmt: skip
    assert "0.2" not in x_ticks(_trials({16: 1.0}, span=(0.01, 100)))


def test_the_legend_explains_each_element_once(two):
    trials, fit = two
    profiled = OptimumFit(fit.table.assign(method="profile(lr)"), fit.smooth)
    texts = _legend_texts(_build(trials, profiled))
    for element in ["trial means", "replicas", "smooth, profile(lr), 95% bootstrap band",
                    "optimum, 95% CI"]:  # fmt: skip
        assert texts.count(element) == 1
    assert "smooth, 95% bootstrap band" in _legend_texts(_build(trials, fit))


def test_points_replicas_smooth_and_optimum_are_drawn_per_group(two):
    trials, fit = two
    ax = _build(trials, fit).axes[0]
    means = [line for line in ax.get_lines() if line.get_marker() == "o"]
    finished = trials[trials["status"] == "FINISHED"]
    assert sum(len(line.get_xdata()) for line in means) == len(finished)  # the failed one is not
    assert max(max(line.get_ydata()) for line in means) < 1e6
    replicas = [c for c in ax.collections if not isinstance(c, PolyCollection)]
    assert sum(len(c.get_offsets()) for c in replicas) == 3 * len(finished)
    optima = [line for line in ax.get_lines() if line.get_marker() == "D"]
    assert sorted(float(line.get_xdata()[0]) for line in optima) == sorted(fit.table["x_opt"])
    cis = [line for line in ax.get_lines() if line.get_marker() == "|"]
    assert sorted(tuple(line.get_xdata()) for line in cis) == sorted(
        zip(fit.table["ci_low"], fit.table["ci_high"])
    )


def test_the_floor_is_a_dotted_line_on_every_panel_when_given(five):
    def floors(fig):
        lines = [line for ax in fig.axes for line in ax.get_lines()]
        return [
            ln for ln in lines if ln.get_linestyle() == ":" and list(ln.get_ydata()) == [FLOOR] * 2
        ]

    fig = _build(*five, floor=FLOOR)
    assert len(floors(fig)) == len(fig.axes) == 5
    assert "label-noise floor" in _legend_texts(fig)
    fig = _build(*five)
    assert not floors(fig) and "label-noise floor" not in _legend_texts(fig)


def test_the_band_stays_above_zero_on_a_log_axis_and_a_negative_one_gets_a_linear_axis(two):
    trials, fit = two
    ax = _build(trials, fit).axes[0]
    assert ax.get_yscale() == "log"
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    ys = np.concatenate([p.vertices[:, 1] for band in bands for p in band.get_paths()])
    assert (ys[np.isfinite(ys)] > 0).all()
    assert ax.get_ylim()[0] > 0
    negative = fit.smooth.assign(band_low=fit.smooth["band_low"] - 10.0)
    assert _build(trials, OptimumFit(fit.table, negative)).axes[0].get_yscale() == "linear"


def test_overlays_are_drawn_dashed_and_hollow_on_every_panel(five, gp):
    fig = _build(*five, overlays=[gp])
    smooth_x = gp.fit.smooth["x"].to_numpy()
    for ax in fig.axes:
        dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert len(dashed) == 1 and np.allclose(dashed[0].get_xdata(), smooth_x)
        hollow = [line for line in ax.get_lines() if line.get_markerfacecolor() == "white"]
        assert {line.get_marker() for line in hollow} == {"o", "D"}  # its trials and its optimum
        optimum = next(line for line in hollow if line.get_marker() == "D")
        assert optimum.get_xdata()[0] == pytest.approx(gp.fit.table["x_opt"][0])
    assert f"GP, λ* = {gp.fit.table['x_opt'][0]:.3g}" in _legend_texts(fig)


def test_the_default_title_counts_finished_trials_and_replicas(two):
    trials, fit = two
    assert _build(trials, fit).get_suptitle() == (
        f"sinusoid · {2 * 14} finished trials × 3 replicas · steps=500"  # width varies: not there
    )
    one = trials[trials["width"] == 16]
    one.attrs = dict(trials.attrs)
    assert _build(one, _fit(one)).get_suptitle().endswith("steps=500, width=16")
    assert _build(trials, fit, title="Fig. 2").get_suptitle() == "Fig. 2"


def test_flags_in_the_legend_entry_of_a_group(two):
    trials, fit = two
    flagged = OptimumFit(fit.table.assign(flags=["edge", ""]), fit.smooth)
    texts = _legend_texts(_build(trials, flagged))
    assert f"width=16: σ⁻¹* = {fit.table['x_opt'][0]:.3g} [edge]" in texts


def test_a_by_the_fit_lacks_raises(two):
    trials, fit = two
    with pytest.raises(ValueError, match="`by` must name group columns of the fit"):
        _build(trials, fit, by=["depth"])


# --------------------------------------------------------------------------------------------
# the trend figure


def _build_trend(trend, **kwargs):
    return figures._build_trend(trend, x="sigma_inv", along="width", **kwargs)


def test_the_trend_marks_flagged_rows_hollow():
    ax = _build_trend(_trend()).axes[0]
    marks = [line for line in ax.get_lines() if line.get_marker() == "o"]
    hollow = [line for line in marks if line.get_markerfacecolor() == "white"]
    filled = [line for line in marks if line.get_markerfacecolor() != "white"]
    assert [list(line.get_xdata()) for line in hollow] == [[64]]
    assert sorted(x for line in filled for x in line.get_xdata()) == [16, 256, 1024]
    assert figures.FLAGGED in _legend_texts(ax.figure)
    plain = _build_trend(_trend(flags=("", "", "", "")))
    assert figures.FLAGGED not in _legend_texts(plain)


def test_the_trend_draws_ci_bars_on_log_axes_labelled_by_name():
    trend = _trend()
    ax = _build_trend(trend).axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert ax.get_xlabel() == "width"
    assert ax.get_ylabel() == "optimal σ⁻¹ (length scale), 95% CI"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["16", "64", "256", "1024"]
    (bars,) = ax.collections
    segments = bars.get_segments()
    assert [tuple(s[:, 1]) for s in segments] == list(zip(trend["ci_low"], trend["ci_high"]))
    assert "profile(lr)" in ax.figure.get_suptitle()
    shifted = trend.assign(width=trend["width"] - 16)  # a zero on the axis: linear
    assert _build_trend(shifted).axes[0].get_xscale() == "linear"


def test_the_trend_overlay_is_drawn_in_its_own_style_and_one_line_per_other_group():
    trend = pd.concat([_trend().assign(n_train=100), _trend().assign(n_train=1000)])
    trend = trend[["n_train", *_trend().columns]]
    gp = _trend(flags=("",) * 4).assign(x_opt=lambda f: f["x_opt"] / 2)
    ax = _build_trend(trend, overlay=("GP λ*", gp)).axes[0]
    texts = _legend_texts(ax.figure)
    assert {"n_train=100", "n_train=1000", "GP λ*"} <= set(texts)
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and np.allclose(dashed[0].get_ydata(), gp["x_opt"])
    solid = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
    assert len(solid) == 2
    # the series are shifted apart a little, so their CI bars do not hide one another
    assert not np.allclose(solid[0].get_xdata(), solid[1].get_xdata())
    assert np.allclose(solid[0].get_xdata() / solid[1].get_xdata(), 1, rtol=0.1)
