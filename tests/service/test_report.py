"""What `run` and `curves` say about an optimum at an edge: the `extend` that fixes it."""

from __future__ import annotations

import pandas as pd

from service.report import Summary


def summary(x_opt: float, flags: str, log: bool = True) -> Summary:
    trials = pd.DataFrame()
    trials.attrs.update(sweep="sw", search={"sigma_inv": {"low": 0.1, "high": 10.0, "log": log}})
    optimum = pd.DataFrame([{"width": 16, "x_opt": x_opt, "flags": flags}])
    return Summary(trials, pd.DataFrame(), optimum=optimum, x="sigma_inv")


def test_an_edge_optimum_gets_the_extend_that_widens_its_side():
    high = summary(9.5, "edge").extend_commands()
    assert high == ["widen it, keeping these trials: smoothsweep extend sw "
                    "--set search.sigma_inv.high=100"]  # fmt: skip
    assert summary(0.11, "edge,gap").extend_commands()[0].endswith("search.sigma_inv.low=0.01")
    assert summary(9.5, "edge", log=False).extend_commands()[0].endswith("high=19.9")
    assert summary(1.0, "gap").extend_commands() == []
    assert any("smoothsweep extend sw" in line for line in summary(9.5, "edge").warnings())
