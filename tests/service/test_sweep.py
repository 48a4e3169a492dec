"""The sweep's callbacks without a cluster (the Tuner itself: tests/integration/test_sweep.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from service import conventions as cv
from service.spec import load_spec
from service.sweep import Progress

SPEC = {
    "name": "t",
    "experiment": "sinusoid",
    "objective": {"metric": "test_mse", "mode": "min"},
    "axes": {"width": [8, 16]},
    "trials_per_cell": 2,
}


@dataclass
class FakeTrial:
    trial_id: str
    config: dict = field(default_factory=dict)


def last(progress, trial, **metrics):
    """The trial's last report, as `service.trial` sends it: a pack of one."""
    progress.on_trial_result(0, [], trial, {"step": 1, cv.MEMBERS: {"0": metrics}})


def test_progress_counts_every_trial_and_keeps_the_best(capsys):
    progress = Progress(load_spec(SPEC))
    a, b, c, d = (FakeTrial(t) for t in "abcd")
    last(progress, a, test_mse=0.5, diverged=0.0)
    progress.on_trial_complete(0, [], a)
    last(progress, b, test_mse=0.2, diverged=0.0)
    progress.on_trial_complete(0, [], b)
    last(progress, c, test_mse=float("inf"), diverged=1.0)
    progress.on_trial_complete(0, [], c)
    last(progress, d, train_mse=0.1)  # its objective never came
    progress.on_trial_error(0, [], d)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[1/4 trials") and lines[0].endswith("test_mse=0.5 | best 0.5 (a)")
    assert lines[1].endswith("test_mse=0.2 | best 0.2 (b)")
    assert lines[2].endswith("test_mse=inf diverged | best 0.2 (b)")
    assert lines[3].endswith("d test_mse=- error | best 0.2 (b)")


def test_progress_counts_configurations_as_they_end_within_their_packs(capsys):
    progress = Progress(load_spec({**SPEC, "trials_per_cell": 3}))
    pack = FakeTrial("p", {cv.PACK: [{}, {}, {}]})
    progress.on_trial_result(0, [], pack, {"step": 2, cv.MEMBERS: {
        "0": {"test_mse": 0.4}, "1": {"test_mse": 0.3, cv.STATUS: "stopped"},
        "2": {"test_mse": float("inf"), cv.STATUS: "failed"}}})  # fmt: skip
    progress.on_trial_result(0, [], pack, {"step": 4, cv.MEMBERS: {
        "0": {"test_mse": 0.1, cv.STATUS: "finished"}}})  # fmt: skip
    progress.on_trial_complete(0, [], pack)
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split("]")[0] for ln in lines] == [f"[{i}/6 trials, 0s" for i in (1, 2, 3)]
    assert lines[0].endswith("p#1 test_mse=0.3 stopped | best 0.3 (p#1)")
    assert lines[1].endswith("p#2 test_mse=inf diverged | best 0.3 (p#1)")
    assert lines[2].endswith("p#0 test_mse=0.1 | best 0.1 (p#0)")
