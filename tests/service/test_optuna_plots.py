"""Sweep trials as Optuna trials, and Optuna's plots of them, on hand-built frames."""

from __future__ import annotations

import math

import matplotlib
import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from service import optuna_plots as op
from service.errors import SpecError

optuna.logging.set_verbosity(optuna.logging.WARNING)

SEARCH = {
    "sigma_inv": {"low": 0.1, "high": 10.0, "log": True},
    "lr": {"low": 1e-4, "high": 1e-1, "log": True},
    "width": {"low": 16.0, "high": 64.0, "log": False},
}
PNG = b"\x89PNG\r\n\x1a\n"
INF = math.inf


def _frame(rows: list[dict], search=SEARCH, mode="min") -> pd.DataFrame:
    base = {"sweep": "sw", "failure_reason": None, "width": 16, "steps": 500, "diverged": 0.0}
    frame = pd.DataFrame([{**base, "run_id": f"r{i}", "trial_id": f"t{i}", **row}
                          for i, row in enumerate(rows)])  # fmt: skip
    frame["cell"] = [f"width={w}" for w in frame["width"]]
    frame.attrs.update(sweep="sw", objective_metric="test_mse", objective_mode=mode,
                       axes=["width"], search=search)  # fmt: skip
    return frame


def _row(status="FINISHED", sigma_inv=1.0, lr=1e-2, test_mse=0.5, **extra) -> dict:
    return {"status": status, "sigma_inv": sigma_inv, "lr": lr, "test_mse": test_mse, **extra}


MIXED = [
    _row(test_mse=0.5),
    _row(sigma_inv=2.0, lr=1e-3, width=32, test_mse=0.2),  # the best
    _row(test_mse=INF),  # diverged, as a finished run with a non-finite objective
    _row("FAILED", test_mse=math.nan, diverged=1.0, failure_reason="non-finite loss"),  # tracker's
    _row("FAILED", test_mse=math.nan, failure_reason="CUDA out of memory"),
    _row("KILLED", test_mse=math.nan, failure_reason="node lost"),
    _row(sigma_inv=20.0, test_mse=0.9),  # beyond `high`: a later sweep searched further
    _row("RUNNING", test_mse=math.nan),
]


def test_frozen_trials_tell_optuna_what_the_live_search_told_it():
    trials = op.frozen_trials(_frame(MIXED))
    C, F = TrialState.COMPLETE, TrialState.FAIL
    assert [t.state for t in trials] == [C, C, C, C, F, F, C]  # the running trial is left out
    assert [t.value for t in trials] == [0.5, 0.2, INF, INF, None, None, 0.9]
    assert [t.user_attrs for t in trials][:2] == [
        {"smoothsweep.trial_id": "t0", "smoothsweep.run_id": "r0"},
        {"smoothsweep.trial_id": "t1", "smoothsweep.run_id": "r1"},
    ]
    assert trials[1].params == {"sigma_inv": 2.0, "lr": 1e-3, "width": 32}  # no `steps`: fixed
    assert type(trials[1].params["width"]) is int
    expected = {
        "sigma_inv": FloatDistribution(0.1, 20.0, log=True),  # widened to the trial at 20
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
        "width": IntDistribution(16, 64),
    }
    assert all(t.distributions == expected for t in trials)  # one space for all: see the module

    study = optuna.create_study()
    study.add_trials(trials)
    assert len(study.trials) == 7
    assert study.best_trial.user_attrs["smoothsweep.run_id"] == "r1"
    assert study.best_value == 0.2


def test_frozen_trials_follow_the_mode_and_an_explicit_search():
    trials = op.frozen_trials(_frame(MIXED), mode="max", search={"lr": SEARCH["lr"]})
    assert [t.value for t in trials] == [0.5, 0.2, -INF, -INF, None, None, 0.9]
    assert {p for t in trials for p in t.params} == {"lr"}
    study = optuna.create_study(direction="maximize")
    study.add_trials(trials)
    assert study.best_trial.user_attrs["smoothsweep.run_id"] == "r6"


@pytest.mark.parametrize(
    ("search", "named"),
    [
        ({"depth": {"low": 1, "high": 4}}, "depth"),
        ({"cell": {"low": 1, "high": 4}}, "cell"),  # not numeric
        ({"lr": {"low": 1e-4}}, "lr"),  # no high
    ],
)
def test_frozen_trials_name_a_bad_search_entry(search, named):
    with pytest.raises(SpecError, match=f"`search.*{named}"):
        op.frozen_trials(_frame(MIXED), search=search)


def test_cell_studies_split_by_cell_with_names_directions_and_counts():
    studies = op.cell_studies(_frame(MIXED))
    assert list(studies) == ["width=16", "width=32"]
    assert [s.study_name for s in studies.values()] == ["sw/width=16", "sw/width=32"]
    assert [len(s.trials) for s in studies.values()] == [6, 1]
    assert all(s.direction == optuna.study.StudyDirection.MINIMIZE for s in studies.values())
    assert studies["width=16"].metric_names == ["test_mse"]

    no_axes = _frame(MIXED[:2], mode="max").drop(columns="cell")
    (study,) = op.cell_studies(no_axes).values()
    assert list(op.cell_studies(no_axes)) == ["all"] and study.study_name == "sw/all"
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE and len(study.trials) == 2

    no_sweep = _frame(MIXED)
    del no_sweep.attrs["sweep"]
    with pytest.raises(SpecError, match="sweep"):
        op.cell_studies(no_sweep)


def _basin(n: int, depends_on: str, seed: int = 0) -> pd.DataFrame:
    """test_mse = (log p - log p*)² in one parameter p, and independent of the other."""
    rng = np.random.default_rng(seed)
    best = {"sigma_inv": 1.5, "lr": 3e-3}
    rows = []
    for _ in range(n):
        point = {p: float(math.exp(rng.uniform(math.log(SEARCH[p]["low"]),
                                                math.log(SEARCH[p]["high"]))))
                 for p in best}  # fmt: skip
        mse = 0.01 + (math.log(point[depends_on]) - math.log(best[depends_on])) ** 2
        rows.append(_row(**point, test_mse=mse))
    return _frame(rows, search={p: SEARCH[p] for p in best})


@pytest.mark.parametrize(("depends_on", "other"), [("sigma_inv", "lr"), ("lr", "sigma_inv")])
def test_importance_finds_the_parameter_the_objective_depends_on(depends_on, other):
    (study,) = op.cell_studies(_basin(40, depends_on)).values()
    importances = optuna.importance.get_param_importances(
        study, evaluator=op.importance_evaluator(40)
    )
    assert importances[depends_on] > 0.6 and importances[depends_on] > importances[other]


def test_importance_refuses_too_few_trials():
    with pytest.raises(SpecError, match="n_trials"):
        op.importance_evaluator(op.MIN_IMPORTANCE_TRIALS - 1)


def _assert_png(path) -> None:
    assert path.read_bytes()[:8] == PNG
    height, width = matplotlib.image.imread(path).shape[:2]
    assert width >= 300 and height >= 300


def test_render_sweep_plots_writes_each_kind_per_cell_and_closes_its_figures(tmp_path):
    basin = _basin(12, "sigma_inv")
    rows = [*basin.drop(columns=["cell", "run_id", "trial_id"]).to_dict("records"),
            _row(test_mse=INF), _row("FAILED", test_mse=math.nan),
            _row(width=64, test_mse=0.3)]  # fmt: skip
    frame = _frame(rows, search=basin.attrs["search"])
    style = dict(matplotlib.rcParams)

    paths = op.render_sweep_plots(frame, tmp_path / "plots")

    kinds = ("importance", "slice", "contour", "history")
    expected = [f"optuna-width_16-{k}.png" for k in kinds]
    expected += ["optuna-width_64-slice.png", "optuna-width_64-history.png"]  # one trial
    assert [p.name for p in paths] == expected
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(expected)
    for path in paths:
        _assert_png(path)
    assert plt.get_fignums() == []
    assert dict(matplotlib.rcParams) == style  # Optuna's ggplot style did not leak out


def test_a_cell_of_diverged_trials_draws_nothing_and_keeps_the_callers_figure(tmp_path):
    frame = _frame([_row(test_mse=INF), _row("FAILED", test_mse=math.nan, diverged=1.0)])
    (study,) = op.cell_studies(frame.drop(columns="cell")).values()
    mine = plt.figure()
    try:
        assert op.render_cell_plots(study, tmp_path, prefix="optuna-all") == []
        assert plt.get_fignums() == [mine.number]
    finally:
        plt.close(mine)


def test_slice_and_contour_axes_are_log_over_the_searched_range():
    (study,) = op.cell_studies(_basin(12, "sigma_inv")).values()
    cell = op._Cell.of(study, "sigma_inv", "lr")
    with op._pyplot_confined():
        slices = {ax.get_xlabel(): ax for ax in np.ravel(op._slice(cell))}
        assert sorted(slices) == ["lr", "sigma_inv"]
        for name, ax in slices.items():
            low, high = ax.get_xlim()
            assert ax.get_xscale() == "log"
            assert (
                low < SEARCH[name]["low"] < SEARCH[name]["high"] < high < 1.5 * SEARCH[name]["high"]
            )
        assert slices["lr"].get_yscale() == "log"  # test_mse spans decades here
        contour = op._contour(cell)
        assert (contour.get_xscale(), contour.get_yscale()) == ("log", "log")
        assert {contour.get_xlabel(), contour.get_ylabel()} == {"lr", "sigma_inv"}
