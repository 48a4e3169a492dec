"""The function trainable Ray runs in its workers: kept light on purpose.

Workers import this module to run a trial, so it imports only Ray and the trainables: no MLflow, no
spec code (MLflow alone costs each worker about a second at start-up).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from trainables.report import DIVERGED

GPU_PEAK = "gpu_memory_peak_mib"


class TuneReporter:
    """Adapts the trainables' `report(step, metrics)` to `ray.tune.report`.

    A diverged trial reports its objective as the worst possible value: Optuna then learns that the
    region is bad (a failed trial would be ignored by TPE), and MLflow still marks the run FAILED.
    An objective the experiment declares final (measured only at the last evaluation) is absent
    from the reports before it, and stays absent: the searcher and scheduler wait for it.
    """

    def __init__(self, metric: str, mode: str, device: str = "cpu") -> None:
        self.metric = metric
        self.worst = math.inf if mode == "min" else -math.inf
        self.on_gpu = device.startswith("cuda")

    def __call__(self, step: int, metrics: Mapping[str, Any]) -> bool:
        from ray import tune

        out = dict(metrics)
        out["step"] = step
        if self.on_gpu:
            # What a user needs to size `resources.gpu`: the most this trial has held so far.
            import torch

            out[GPU_PEAK] = torch.cuda.max_memory_allocated() / 2**20
        value = out.get(self.metric)
        # A diverged run stops before its final evaluation: a final-only objective is missing then.
        if self.metric in out or out.get(DIVERGED):
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                out[self.metric] = self.worst
        tune.report(out)
        return False  # Tune stops a trial itself (scheduler decisions end the function)


def trial_device(assigned: Mapping[str, float], cuda_available: bool) -> tuple[str, float | None]:
    """Where a trial's replicas train, and the share of GPU memory it may use.

    Ray gives a trial with `resources.gpu: 0.25` a quarter of one GPU (CUDA_VISIBLE_DEVICES names
    it, so it is `cuda` here) and trusts the trial to keep to its quarter; capping the caching
    allocator at that fraction makes an oversized trial fail alone instead of starving the three
    trials that share its card. A whole GPU or more: no cap (one device is used; replicas are a
    tensor dimension, not a reason to spread).
    """
    gpus = float(assigned.get("GPU", 0.0))
    if gpus <= 0:
        return "cpu", None
    if not cuda_available:
        raise RuntimeError(
            f"Ray assigned this trial {gpus:g} GPU but torch sees no CUDA device; "
            f"is a CUDA build of torch installed on the worker nodes?"
        )
    return "cuda", (gpus if gpus < 1 else None)


def run_trial(config: dict[str, Any], experiment: str, metric: str, mode: str) -> None:
    """The function trainable: one trial, all its replicas, on the device Ray assigned."""
    import ray
    import torch

    import trainables

    assigned = ray.get_runtime_context().get_assigned_resources()
    torch.set_num_threads(max(1, int(assigned.get("CPU", 1))))
    device, fraction = trial_device(assigned, torch.cuda.is_available())
    if fraction is not None:
        torch.cuda.set_per_process_memory_fraction(fraction, torch.cuda.current_device())
    trainables.load(experiment).run(config, TuneReporter(metric, mode, device), device=device)
