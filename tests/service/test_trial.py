"""What workers run, without Ray: the Tune reporter and the device a trial trains on."""

from __future__ import annotations

import math

import pytest

from service.trial import TuneReporter, trial_device


@pytest.fixture
def sent(monkeypatch):
    reports: list[dict] = []
    monkeypatch.setattr("ray.tune.report", lambda metrics: reports.append(metrics))
    return reports


def test_reporter_turns_divergence_into_the_worst_value(sent):
    assert TuneReporter("test_mse", "min")(5, {"test_mse": math.nan, "diverged": 1.0}) is False
    TuneReporter("test_acc", "max")(5, {"test_acc": math.nan})
    TuneReporter("test_mse", "min")(7, {"test_mse": 0.25})
    assert sent[0]["test_mse"] == math.inf and sent[0]["step"] == 5
    assert sent[1]["test_acc"] == -math.inf
    assert sent[2] == {"test_mse": 0.25, "step": 7}


def test_a_final_only_objective_is_left_out_until_it_is_measured(sent):
    report = TuneReporter("fgsm_acc_0.1", "max")
    report(20, {"test_acc": 0.6})
    report(40, {"test_acc": 0.8, "fgsm_acc_0.1": 0.5, "diverged": 0.0})
    assert sent[0] == {"test_acc": 0.6, "step": 20}  # no stand-in value before the final report
    assert sent[1]["fgsm_acc_0.1"] == 0.5


def test_a_run_that_diverges_before_its_final_objective_reports_the_worst(sent):
    TuneReporter("fgsm_acc_0.1", "max")(20, {"test_acc": math.nan, "diverged": 1.0})
    assert sent[0]["fgsm_acc_0.1"] == -math.inf


def test_a_gpu_trial_reports_its_peak_gpu_memory(sent, monkeypatch):
    monkeypatch.setattr("torch.cuda.max_memory_allocated", lambda *a: 3 * 2**20)
    TuneReporter("test_mse", "min", "cuda")(1, {"test_mse": 0.5})
    TuneReporter("test_mse", "min", "cpu")(1, {"test_mse": 0.5})
    assert sent[0] == {"test_mse": 0.5, "step": 1, "gpu_memory_peak_mib": 3.0}
    assert "gpu_memory_peak_mib" not in sent[1]


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
    assert trial_device(assigned, cuda) == expected


def test_a_gpu_trial_on_a_node_without_cuda_fails_with_the_reason():
    with pytest.raises(RuntimeError, match="no CUDA device"):
        trial_device({"GPU": 0.5}, cuda_available=False)
