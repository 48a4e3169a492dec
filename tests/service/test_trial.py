"""What workers run, without Ray: the Tune reporter and the device a trial trains on."""

from __future__ import annotations

import math

import pytest

from service import conventions as cv
from service.trial import PackReporter, RungRule, trial_device, trial_threads


@pytest.fixture
def sent(monkeypatch):
    reports: list[dict] = []
    monkeypatch.setattr("ray.tune.report", lambda metrics: reports.append(metrics))
    return reports


def member(report, k=0):
    return report[cv.MEMBERS][str(k)]


def test_reporter_turns_divergence_into_the_worst_value(sent):
    assert PackReporter("test_mse", "min")(5, {0: {"test_mse": math.nan, "diverged": 1.0}}) == set()
    PackReporter("test_acc", "max")(5, {0: {"test_acc": math.nan}})
    PackReporter("test_mse", "min")(7, {0: {"test_mse": 0.25}})
    assert member(sent[0])["test_mse"] == math.inf and sent[0]["step"] == 5
    assert member(sent[0])[cv.STATUS] == "failed"
    assert member(sent[1])["test_acc"] == -math.inf
    assert sent[2] == {"step": 7, "test_mse": 0.25, cv.MEMBERS: {"0": {"test_mse": 0.25}}}


def test_a_final_only_objective_is_left_out_until_it_is_measured(sent):
    report = PackReporter("fgsm_acc_0.1", "max")
    report(20, {0: {"test_acc": 0.6}})
    report(40, {0: {"test_acc": 0.8, "fgsm_acc_0.1": 0.5, "diverged": 0.0}})
    assert sent[0] == {"step": 20, cv.MEMBERS: {"0": {"test_acc": 0.6}}}  # no stand-in value
    assert member(sent[1])["fgsm_acc_0.1"] == 0.5 and member(sent[1])[cv.STATUS] == "finished"


def test_a_run_that_diverges_before_its_final_objective_reports_the_worst(sent):
    PackReporter("fgsm_acc_0.1", "max")(20, {0: {"test_acc": math.nan, "diverged": 1.0}})
    assert member(sent[0])["fgsm_acc_0.1"] == -math.inf


def test_a_gpu_trial_reports_its_peak_gpu_memory(sent, monkeypatch):
    monkeypatch.setattr("torch.cuda.max_memory_allocated", lambda *a: 3 * 2**20)
    PackReporter("test_mse", "min", "cuda")(1, {0: {"test_mse": 0.5}})
    PackReporter("test_mse", "min", "cpu")(1, {0: {"test_mse": 0.5}})
    assert sent[0]["gpu_memory_peak_mib"] == 3.0
    assert "gpu_memory_peak_mib" not in sent[1]


def test_the_pack_result_carries_its_best_objective_for_tune(sent):
    PackReporter("test_acc", "max")(3, {0: {"test_acc": 0.5}, 1: {"test_acc": 0.75}})
    assert sent[0]["test_acc"] == 0.75 and set(sent[0][cv.MEMBERS]) == {"0", "1"}


def test_rungs_are_counted_in_reports_as_ashas():
    rule = RungRule("min", grace_period=2, reduction_factor=2)
    assert [r for r in range(1, 20) if rule.is_rung(r)] == [2, 4, 8, 16]
    rule = RungRule("min", grace_period=1, reduction_factor=3)
    assert [r for r in range(1, 30) if rule.is_rung(r)] == [1, 3, 9, 27]


def test_a_stacked_pack_keeps_its_best_share_at_each_rung():
    rule = RungRule("min", grace_period=1, reduction_factor=2)
    values = {k: float(v) for k, v in enumerate([5, 1, 4, 2, 3, 6])}
    assert rule.stops(1, values) == {0, 2, 5}  # the best three of six go on
    assert rule.stops(2, {1: 1.0, 3: 0.5, 4: 3.0}) == {4}  # rung 2: the best two of three
    assert rule.stops(3, {1: 9.0, 3: 0.1}) == set()  # not a rung
    maxed = RungRule("max", grace_period=1, reduction_factor=2, max_t=4)
    assert maxed.stops(1, {0: 0.9, 1: 0.1}) == {1}
    assert maxed.stops(4, {0: 0.9}) == {0}  # max_t ends it


def test_configurations_arriving_in_turn_are_ranked_against_those_before():
    rule = RungRule("min", grace_period=1, reduction_factor=2)
    assert rule.stops(1, {0: 2.0}) == set()  # alone: nothing to compare with
    assert rule.stops(1, {1: 3.0}) == {1}  # worse than the best half of [2, 3]
    assert rule.stops(1, {2: 1.0}) == set()


def test_the_rule_stops_members_through_the_reporter(sent):
    report = PackReporter("test_mse", "min", rule=RungRule("min", 1, 2))
    stop = report(10, {0: {"test_mse": 0.2}, 1: {"test_mse": 0.9}})
    assert stop == {1} and member(sent[0], 1)[cv.STATUS] == "stopped"
    assert cv.STATUS not in member(sent[0], 0)


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


@pytest.mark.parametrize(
    "assigned,threads,expected",
    [
        ({"CPU": 1.0}, None, 1),  # one CPU, one thread: never torch's one-per-core default
        ({"CPU": 4.0}, None, 4),
        ({"CPU": 0.5}, None, 1),  # a fraction of a CPU still needs a thread
        ({}, None, 1),
        ({"CPU": 1.0}, 3, 3),  # resources.threads overrides
    ],
)
def test_a_trial_runs_as_many_torch_threads_as_cpus_it_was_given(assigned, threads, expected):
    assert trial_threads(assigned, threads) == expected


def test_a_gpu_trial_on_a_node_without_cuda_fails_with_the_reason():
    with pytest.raises(RuntimeError, match="no CUDA device"):
        trial_device({"GPU": 0.5}, cuda_available=False)


def test_a_packs_members_pass_tunes_flattening_whole(sent):
    """Tune keeps running statistics of every numeric leaf it finds by flattening a result's
    dicts; a pack's members must not become thousands of such series, yet the searcher (which
    sees the flattened result) and a pickled copy must still read them back."""
    import pickle

    from ray.tune.utils import flatten_dict

    PackReporter("test_mse", "min")(3, {k: {"test_mse": 0.1 * (k + 1)} for k in range(48)})
    flat = flatten_dict(sent[0])
    assert sorted(flat) == ["members", "step", "test_mse"]  # no members/<k>/<metric> keys
    assert cv.members(flat) == {str(k): {"test_mse": 0.1 * (k + 1)} for k in range(48)}
    assert pickle.loads(pickle.dumps(sent[0]))[cv.MEMBERS] == sent[0][cv.MEMBERS]
    assert repr(sent[0][cv.MEMBERS]) == "Members(<48 configurations>)"  # Tune formats results
