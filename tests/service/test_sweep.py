"""The sweep's callbacks without a cluster (the Tuner itself: tests/integration/test_sweep.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    last_result: dict = field(default_factory=dict)


def test_progress_counts_every_trial_and_keeps_the_best(capsys):
    progress = Progress(load_spec(SPEC))
    progress.on_trial_complete(0, [], FakeTrial("a", {"test_mse": 0.5, "diverged": 0.0}))
    progress.on_trial_complete(0, [], FakeTrial("b", {"test_mse": 0.2, "diverged": 0.0}))
    progress.on_trial_complete(0, [], FakeTrial("c", {"test_mse": float("inf"), "diverged": 1.0}))
    progress.on_trial_error(0, [], FakeTrial("d", {"train_mse": 0.1}))  # its objective never came
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[1/4 trials") and lines[0].endswith("test_mse=0.5 | best 0.5 (a)")
    assert lines[1].endswith("test_mse=0.2 | best 0.2 (b)")
    assert lines[2].endswith("test_mse=inf diverged | best 0.2 (b)")
    assert lines[3].endswith("d test_mse=- error | best 0.2 (b)")
