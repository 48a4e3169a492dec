"""Plot data payloads: shapes are checked, and every payload survives JSON and renders."""

from __future__ import annotations

import json

import pytest

from service.plots import render_artifact
from trainables import artifacts


def test_surface_checks_its_grid():
    with pytest.raises(ValueError, match=r"`z` must have shape \(len\(y\), len\(x\)\) = \(2, 3\)"):
        artifacts.surface([0, 1, 2], [0, 1], [[1, 2], [3, 4]])


def test_histogram_checks_its_counts():
    with pytest.raises(ValueError, match="must have len\\(edges\\) - 1 = 2 values"):
        artifacts.histogram([0, 1, 2], {"a": [1, 2, 3]})


@pytest.mark.parametrize(
    "payload",
    [
        artifacts.surface(
            [0, 1, 2], [0, 1], [[1, 2, 3], [4, 5, 6]], points={"x": [0.5], "y": [0.5]}
        ),
        artifacts.curves({"a": ([1, 2], [3, 4]), "b": ([1], [2])}, log_x=True, markers=["b"]),
        artifacts.histogram([0, 1, 2], {"a": [1, 2], "b": [0, 3]}),
    ],
    ids=["surface", "curves", "histogram"],
)
def test_payloads_round_trip_json_and_render(payload, tmp_path):
    again = json.loads(json.dumps(payload))
    assert again == payload
    png = render_artifact(again, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="`kind` must be surface, curves or histogram"):
        render_artifact({"kind": "pie"}, tmp_path / "p.png")


def test_experiments_hand_their_plots_to_the_final_report():
    from trainables import sinusoid, spiral

    out = sinusoid.run(
        {"width": 8, "steps": 4, "eval_every": 2, "test_points": 10, "ood_points": 10}
    )
    assert out["artifacts"]["fit"]["kind"] == "curves"
    out = spiral.run(
        {"width": 8, "steps": 2, "eval_every": 2, "train_points": 10, "test_points": 10}
    )
    assert out["artifacts"]["decision_boundary"]["kind"] == "surface"
