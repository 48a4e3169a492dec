"""The per-cell searcher without a cluster: quotas, which study hears what, state, samplers."""

from __future__ import annotations

import optuna
import pytest

from service import search
from service.spec import load_spec

SPEC = {
    "name": "t",
    "experiment": "sinusoid",
    "objective": {"metric": "test_mse", "mode": "min"},
    "fixed": {"steps": 10},
    "axes": {"width": [8, 16, 32]},
    "search": {
        "sigma_inv": {"low": 0.1, "high": 10.0, "log": True},
        "activation": {"type": "categorical", "choices": ["tanh", "relu"]},
    },
    "trials_per_cell": 4,
}


def told(searcher: search.StratifiedOptuna, state: optuna.trial.TrialState) -> list[int]:
    return [len(s._ot_study.get_trials(states=(state,))) for s in searcher.studies]


def test_every_cell_gets_its_quota_then_finished():
    searcher = search.StratifiedOptuna(load_spec(SPEC))
    configs = [searcher.suggest(f"t{i}") for i in range(12)]
    assert searcher.suggest("t12") == searcher.FINISHED
    widths = [c["width"] for c in configs]
    assert sorted(widths) == [8] * 4 + [16] * 4 + [32] * 4
    assert widths[:3] == [8, 16, 32]  # cells take turns, so every cell fills at the same pace
    for c in configs:
        assert (
            c["steps"] == 10 and 0.1 <= c["sigma_inv"] <= 10 and c["activation"] in ("tanh", "relu")
        )


def test_results_reach_only_their_cells_study():
    searcher = search.StratifiedOptuna(load_spec(SPEC))
    for i in range(3):
        searcher.suggest(f"t{i}")
    searcher.on_trial_complete("t1", {"test_mse": 0.5, "training_iteration": 1})
    assert told(searcher, optuna.trial.TrialState.COMPLETE) == [0, 1, 0]


def test_a_final_only_objective_reaches_the_study_only_when_reported():
    # An objective measured only at the last evaluation is absent from the results before it.
    searcher = search.StratifiedOptuna(load_spec(SPEC))
    searcher.suggest("t0")
    searcher.on_trial_result("t0", {"train_mse": 0.9, "training_iteration": 1})
    searcher.on_trial_result("t0", {"train_mse": 0.7, "training_iteration": 2})
    (trial,) = searcher.studies[0]._ot_study.get_trials()
    assert trial.intermediate_values == {}
    searcher.on_trial_result("t0", {"test_mse": 0.4, "training_iteration": 3})
    searcher.on_trial_complete("t0", {"test_mse": 0.4, "training_iteration": 3})
    (trial,) = searcher.studies[0]._ot_study.get_trials()
    assert trial.intermediate_values == {3: 0.4} and trial.value == 0.4


def test_searcher_state_round_trips(tmp_path):
    searcher = search.StratifiedOptuna(load_spec(SPEC))
    first = [searcher.suggest(f"t{i}") for i in range(5)]
    searcher.save(tmp_path / "s.pkl")
    restored = search.StratifiedOptuna(load_spec(SPEC))
    restored.restore(tmp_path / "s.pkl")
    assert restored.asked == searcher.asked
    assert restored.suggest("t2") == first[2]  # a known trial gets its config back
    assert restored.suggest("t5") == searcher.suggest("t5")  # and new ones continue identically


def test_no_search_params_still_runs_every_cell():
    spec = load_spec({**SPEC, "search": {}, "trials_per_cell": 1})
    searcher = search.StratifiedOptuna(spec)
    assert [searcher.suggest(f"t{i}")["width"] for i in range(3)] == [8, 16, 32]


@pytest.mark.parametrize(
    "kind,cls",
    [
        ("tpe", optuna.samplers.TPESampler),
        ("cmaes", optuna.samplers.CmaEsSampler),
        ("qmc", optuna.samplers.QMCSampler),
        ("random", optuna.samplers.RandomSampler),
    ],
)
def test_samplers(kind, cls):
    assert isinstance(search.make_sampler(kind, 0), cls)
