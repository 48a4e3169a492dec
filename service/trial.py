"""The function trainable Ray runs in its workers: kept light on purpose.

Workers import this module to run a trial, so it imports only Ray and the trainables: no MLflow, no
spec code (MLflow alone costs each worker about a second at start-up).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


class TuneReporter:
    """Adapts the trainables' `report(step, metrics)` to `ray.tune.report`.

    A diverged trial reports its objective as the worst possible value: Optuna then learns that the
    region is bad (a failed trial would be ignored by TPE), and MLflow still marks the run FAILED.
    """

    def __init__(self, metric: str, mode: str) -> None:
        self.metric = metric
        self.worst = math.inf if mode == "min" else -math.inf

    def __call__(self, step: int, metrics: Mapping[str, Any]) -> bool:
        from ray import tune

        out = dict(metrics)
        out["step"] = step
        value = out.get(self.metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            out[self.metric] = self.worst
        tune.report(out)
        return False  # Tune stops a trial itself (scheduler decisions end the function)


def run_trial(config: dict[str, Any], experiment: str, metric: str, mode: str) -> None:
    """The function trainable: one trial, all its replicas, on the device Ray assigned."""
    import ray
    import torch

    import trainables

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    trainables.load(experiment).run(config, TuneReporter(metric, mode))
