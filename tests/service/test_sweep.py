"""The sweep's own logic without a cluster: per-cell studies, samplers, the Tune reporter."""

from __future__ import annotations

import math

import optuna
import pytest

from service import sweep
from service.spec import load_spec
from service.trial import TuneReporter

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


def test_every_cell_gets_its_quota_then_finished():
    search = sweep.StratifiedOptuna(load_spec(SPEC))
    configs = [search.suggest(f"t{i}") for i in range(12)]
    assert search.suggest("t12") == search.FINISHED
    widths = [c["width"] for c in configs]
    assert sorted(widths) == [8] * 4 + [16] * 4 + [32] * 4
    assert widths[:3] == [8, 16, 32]  # cells take turns, so every cell fills at the same pace
    for c in configs:
        assert (
            c["steps"] == 10 and 0.1 <= c["sigma_inv"] <= 10 and c["activation"] in ("tanh", "relu")
        )


def test_results_reach_only_their_cells_study():
    search = sweep.StratifiedOptuna(load_spec(SPEC))
    for i in range(3):
        search.suggest(f"t{i}")
    search.on_trial_complete("t1", {"test_mse": 0.5, "training_iteration": 1})
    told = [
        len(s._ot_study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
        for s in search.studies
    ]
    assert told == [0, 1, 0]


def test_searcher_state_round_trips(tmp_path):
    search = sweep.StratifiedOptuna(load_spec(SPEC))
    first = [search.suggest(f"t{i}") for i in range(5)]
    search.save(tmp_path / "s.pkl")
    restored = sweep.StratifiedOptuna(load_spec(SPEC))
    restored.restore(tmp_path / "s.pkl")
    assert restored.asked == search.asked
    assert restored.suggest("t2") == first[2]  # a known trial gets its config back
    assert restored.suggest("t5") == search.suggest("t5")  # and new ones continue identically


def test_no_search_params_still_runs_every_cell():
    spec = load_spec({**SPEC, "search": {}, "trials_per_cell": 1})
    search = sweep.StratifiedOptuna(spec)
    assert [search.suggest(f"t{i}")["width"] for i in range(3)] == [8, 16, 32]


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
    assert isinstance(sweep.make_sampler(kind, 0), cls)


def test_reporter_turns_divergence_into_the_worst_value(monkeypatch):
    sent = []
    monkeypatch.setattr("ray.tune.report", lambda metrics: sent.append(metrics))
    assert TuneReporter("test_mse", "min")(5, {"test_mse": math.nan, "diverged": 1.0}) is False
    TuneReporter("test_acc", "max")(5, {"test_acc": math.nan})
    TuneReporter("test_mse", "min")(7, {"test_mse": 0.25})
    assert sent[0]["test_mse"] == math.inf and sent[0]["step"] == 5
    assert sent[1]["test_acc"] == -math.inf
    assert sent[2] == {"test_mse": 0.25, "step": 7}


def test_the_reporter_names_the_metrics_when_the_objective_is_missing(monkeypatch):
    from service.trial import ObjectiveNotReported

    monkeypatch.setattr("ray.tune.report", lambda metrics: None)
    with pytest.raises(
        ObjectiveNotReported, match=r"'test_mae' .* \(it reports ood_mse, test_mse\)"
    ):
        TuneReporter("test_mae", "min")(1, {"test_mse": 0.5, "ood_mse": 1.0, "test_mse/r0": 0.5})


def test_a_gpu_trial_reports_its_peak_gpu_memory(monkeypatch):
    sent = []
    monkeypatch.setattr("ray.tune.report", lambda metrics: sent.append(metrics))
    monkeypatch.setattr("torch.cuda.max_memory_allocated", lambda *a: 3 * 2**20)
    TuneReporter("test_mse", "min", "cuda")(1, {"test_mse": 0.5})
    TuneReporter("test_mse", "min", "cpu")(1, {"test_mse": 0.5})
    assert sent[0] == {"test_mse": 0.5, "step": 1, "gpu_memory_peak_mib": 3.0}
    assert "gpu_memory_peak_mib" not in sent[1]


def test_capacity_shortfall_names_the_spec_fields_a_trial_cannot_get():
    from service.spec import load_spec

    base = {
        "name": "t",
        "experiment": "sinusoid",
        "objective": {"metric": "test_mse", "mode": "min"},
    }
    spec = load_spec({**base, "resources": {"cpu": 4, "gpu": 0.5}})
    assert sweep.capacity_shortfall(spec, {"CPU": 8.0, "GPU": 1.0}) is None
    assert sweep.capacity_shortfall(spec, {"CPU": 2.0}) == (
        "each trial asks for resources.cpu: 4, resources.gpu: 0.5 "
        "but this Ray has 2 CPU, 0 GPU in all"
    )
    assert sweep.capacity_shortfall(spec, {"CPU": 4.0, "GPU": 0.25}) == (
        "each trial asks for resources.gpu: 0.5 but this Ray has 0.25 GPU in all"
    )


@pytest.mark.parametrize(
    "address,local",
    [("auto", True), ("127.0.0.1:6379", True), ("localhost:6379", True), ("[::1]:6379", True),
     ("10.0.0.5:6379", False), ("head.example.org:6379", False), ("ray://127.0.0.1:10001", False)],
)  # fmt: skip
def test_names_this_host(address, local):
    assert sweep.names_this_host(address) is local


def test_probe_address_rejects_malformed_and_closed():
    from service.errors import ClusterError

    with pytest.raises(ClusterError, match="must look like HOST:PORT"):
        sweep.probe_address("localhost")
    with pytest.raises(ClusterError, match="cannot reach the Ray cluster at 127.0.0.1:9"):
        sweep.probe_address("127.0.0.1:9", timeout=2)


@pytest.mark.parametrize(
    "assigned,cuda,expected",
    [
        ({"CPU": 1.0}, True, ("cpu", None)),  # no GPU asked for: never touch one
        ({"CPU": 1.0, "GPU": 0.25}, True, ("cuda", 0.25)),  # a quarter card: a quarter of memory
        ({"CPU": 1.0, "GPU": 1.0}, True, ("cuda", None)),
        ({"CPU": 2.0, "GPU": 2.0}, True, ("cuda", None)),
    ],
)
def test_a_trial_trains_on_the_gpu_share_ray_assigned(assigned, cuda, expected):
    from service.trial import trial_device

    assert trial_device(assigned, cuda) == expected


def test_a_gpu_trial_on_a_node_without_cuda_fails_with_the_reason():
    from service.trial import trial_device

    with pytest.raises(RuntimeError, match="no CUDA device"):
        trial_device({"GPU": 0.5}, cuda_available=False)
