"""The per-cell searcher without a cluster: quotas, which study hears what, state, samplers."""

from __future__ import annotations

import math

import optuna
import pytest

from service import conventions as cv
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
    return [len(s.get_trials(states=(state,))) for s in searcher.studies]


def flat(config: dict) -> dict:
    """A pack of one as the configuration it trains."""
    (member,) = cv.member_configs(config)
    return member


def result(step: int, **members: dict) -> dict:
    """A pack's result as Tune hands it to a searcher: flattened (`members/0/test_mse`)."""
    from ray.tune.utils import flatten_dict

    return flatten_dict({"step": step, "training_iteration": step, cv.MEMBERS: members})


def test_members_are_read_from_nested_and_from_flattened_results():
    nested = {"step": 3, cv.MEMBERS: {"0": {"test_mse": 0.5, "test_mse/r1": 0.4}, "1": {}}}
    assert cv.members(nested) == nested[cv.MEMBERS]
    flat = result(3, **{"0": {"test_mse": 0.5, "test_mse/r1": 0.4}})
    assert "members/0/test_mse/r1" in flat
    assert cv.members(flat) == {"0": {"test_mse": 0.5, "test_mse/r1": 0.4}}


def test_every_cell_gets_its_quota_then_finished():
    searcher = search.StratifiedOptuna(load_spec(SPEC))
    configs = [flat(searcher.suggest(f"t{i}")) for i in range(12)]
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
    searcher.on_trial_complete("t1", result(1, **{"0": {"test_mse": 0.5}}))
    assert told(searcher, optuna.trial.TrialState.COMPLETE) == [0, 1, 0]


def test_a_final_only_objective_reaches_the_study_only_when_reported():
    # An objective measured only at the last evaluation is absent from the results before it.
    searcher = search.StratifiedOptuna(load_spec(SPEC))
    searcher.suggest("t0")
    searcher.on_trial_result("t0", result(1, **{"0": {"train_mse": 0.9}}))
    (trial,) = searcher.studies[0].get_trials()
    assert trial.state == optuna.trial.TrialState.RUNNING
    searcher.on_trial_complete("t0", result(3, **{"0": {"test_mse": 0.4, cv.STATUS: "finished"}}))
    (trial,) = searcher.studies[0].get_trials()
    assert trial.value == 0.4


def test_a_pack_asks_its_cell_for_several_configurations_and_tells_each_its_own_value():
    spec = load_spec({**SPEC, "trials_per_cell": 5})
    searcher = search.StratifiedOptuna(spec, pack_sizes=[3, 3, 3])
    packs = [searcher.suggest(f"t{i}") for i in range(6)]
    assert searcher.suggest("t6") == searcher.FINISHED
    assert [len(p[cv.PACK]) for p in packs] == [3, 3, 3, 2, 2, 2]  # 5 per cell: 3 + 2
    assert len({m["sigma_inv"] for m in packs[0][cv.PACK]}) == 3  # three different asks
    # a configuration stopped early is told at once; a diverged one its worst value
    searcher.on_trial_result("t0", result(1, **{"0": {"test_mse": 0.3, cv.STATUS: "stopped"},
                                                "1": {"test_mse": 0.9}}))  # fmt: skip
    assert told(searcher, optuna.trial.TrialState.COMPLETE) == [1, 0, 0]
    searcher.on_trial_complete("t0", result(2, **{"1": {"test_mse": 0.2, cv.STATUS: "finished"},
                                                  "2": {"test_mse": float("inf"),
                                                        cv.STATUS: "failed"}}))  # fmt: skip
    done = searcher.studies[0].get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    values = sorted(t.value for t in done)
    assert values == [0.2, 0.3, float("inf")]
    # Tune repeats the last result with the completion: nothing is told twice
    searcher.on_trial_complete("t0", result(2, **{"1": {"test_mse": 0.2, cv.STATUS: "finished"}}))
    assert told(searcher, optuna.trial.TrialState.COMPLETE) == [3, 0, 0]
    # a pack that raised before reporting: its configurations are failed trials
    searcher.on_trial_complete("t1", None, error=True)
    assert told(searcher, optuna.trial.TrialState.FAIL) == [0, 3, 0]


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
    assert [flat(searcher.suggest(f"t{i}"))["width"] for i in range(3)] == [8, 16, 32]


@pytest.mark.parametrize(
    "kind,cls",
    [
        ("tpe", optuna.samplers.TPESampler),
        ("cmaes", optuna.samplers.CmaEsSampler),
        ("qmc", optuna.samplers.QMCSampler),
        ("random", optuna.samplers.RandomSampler),
        ("gp", optuna.samplers.GPSampler),
    ],
)
def test_samplers(kind, cls):
    assert isinstance(search.make_sampler(kind, 0), cls)


def test_a_precision_target_closes_an_easy_cell_early_and_keeps_a_hard_one_open():
    import math

    import numpy as np

    spec = load_spec({
        "name": "p", "experiment": "sinusoid", "objective": {"metric": "test_mse"},
        "fixed": {"replicas": 3}, "axes": {"width": [8, 16]},
        "search": {"sigma_inv": {"low": 0.05, "high": 20.0, "log": True}},
        "trials_per_cell": 30, "precision": {"ci_ratio": 1.3, "min_trials": 8}, "sampler": "random",
    })  # fmt: skip
    searcher = search.StratifiedOptuna(spec, sweep="precision-test")
    rng = np.random.default_rng(0)

    def observe(config):
        u = math.log(config[cv.PACK][0]["sigma_inv"])
        if config["width"] == 8:  # easy: a sharp, clean valley at σ⁻¹ = 1
            values = np.exp(u**2) * np.exp(0.01 * rng.standard_normal(3))
        else:  # hard: flat and noisy, no optimum to pin down
            values = np.exp(0.5 * rng.standard_normal(3))
        return {f"test_mse/r{r}": float(v) for r, v in enumerate(values)}

    suggested = []
    for i in range(200):
        config = searcher.suggest(f"t{i}")
        if config == searcher.FINISHED:
            break
        suggested.append(config["width"])
        metrics = {**observe(config), cv.STATUS: "finished"}
        searcher.on_trial_complete(f"t{i}", result(1, **{"0": metrics}))
    easy, hard = suggested.count(8), suggested.count(16)
    assert 8 <= easy < 30 and searcher.precision.closed[0]  # closed once its CI was narrow
    assert hard == 30 and not searcher.precision.closed[1]  # the cap
    assert searcher.complete
    x_opt, ratio = searcher.precision.estimate[0]
    assert ratio <= 1.3 and 0.8 < x_opt < 1.25
    status = searcher.precision.status(searcher.cells)
    assert status.startswith("width=8: sigma_inv* ") and "closed" in status.split(";")[0]
    assert search.StratifiedOptuna.live["precision-test"] is searcher


def test_the_gp_sampler_suggests_inside_the_space_and_learns_from_what_it_is_told():
    spec = load_spec({**SPEC, "sampler": "gp", "trials_per_cell": 14, "axes": {"width": [8]}})
    searcher = search.StratifiedOptuna(spec)
    assert isinstance(searcher.studies[0].sampler, optuna.samplers.GPSampler)
    seen = []
    for i in range(14):
        config = searcher.suggest(f"t{i}")
        member = {**config, **config["pack"][0]}
        s = member["sigma_inv"]
        assert 0.1 <= s <= 10
        seen.append(s)
        value = (math.log(s) - math.log(2.0)) ** 2
        searcher.on_trial_complete(f"t{i}", {"members": {"0": {"test_mse": value,
                                                               "status": "finished"}}})  # fmt: skip
    # after its 10 random start-up trials the GP homes in on the bowl's bottom at σ⁻¹ = 2
    assert min(abs(math.log(s / 2.0)) for s in seen[10:]) < 0.3


def test_an_extended_sweeps_studies_start_from_the_earlier_trials_and_count_only_new_ones():
    spec = load_spec({**SPEC, "axes": {"width": [8, 16]}, "trials_per_cell": 2})
    dist = {"sigma_inv": optuna.distributions.FloatDistribution(0.1, 10.0, log=True)}
    old = [
        optuna.trial.create_trial(params={"sigma_inv": s}, distributions=dist, value=v)
        for s, v in ((0.5, 1.0), (2.0, 0.1), (8.0, 3.0))
    ]
    searcher = search.StratifiedOptuna(spec, warm={"width=8": old})
    assert [t.value for t in searcher.studies[0].trials] == [1.0, 0.1, 3.0]
    assert searcher.studies[1].trials == [] and searcher.studies[0].best_value == 0.1
    made = [searcher.suggest(f"t{i}") for i in range(5)]
    assert made[-1] == search.Searcher.FINISHED  # 2 new trials per cell, the old ones extra
