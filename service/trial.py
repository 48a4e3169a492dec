"""The function trainable Ray runs in its workers: kept light on purpose.

Workers import this module to run a trial, so it imports only Ray and the trainables: no MLflow, no
spec code (MLflow alone costs each worker about a second at start-up).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from service.conventions import MEMBERS, STATUS, Members, member_configs
from trainables import packing
from trainables.report import DIVERGED

GPU_PEAK = "gpu_memory_peak_mib"


class RungRule:
    """ASHA's rule inside a pack: at each rung, a configuration goes on only if it is among the
    best 1/reduction_factor of the configurations that reached that rung so far.

    Rungs are counted in reports (evaluations): `grace_period`, then × `reduction_factor` each
    time, as Ray's ASHAScheduler counts them; `max_t` reports end a configuration. In a stacked
    pack every configuration reaches a rung at the same step and they are ranked together; in a
    pack run one after another they arrive in turn, ranked against those before (as ASHA ranks
    trials that arrive asynchronously).
    """

    def __init__(
        self, mode: str, grace_period: int, reduction_factor: float, max_t: int | None = None
    ) -> None:
        self.sign = 1.0 if mode == "min" else -1.0
        self.grace, self.factor, self.max_t = grace_period, reduction_factor, max_t
        self.recorded: dict[int, list[float]] = {}  # rung (in reports) -> values seen there

    def is_rung(self, reports: int) -> bool:
        rung = self.grace
        while rung < reports:
            rung = math.ceil(rung * self.factor)
        return rung == reports

    def stops(self, reports: int, values: Mapping[int, float]) -> set[int]:
        """Which of these configurations (index -> objective at this report) stop here."""
        if self.max_t is not None and reports >= self.max_t:
            return set(values)
        if not self.is_rung(reports) or not values:
            return set()
        seen = self.recorded.setdefault(reports, [])
        seen.extend(self.sign * v for v in values.values())
        keep = max(1, math.ceil(len(seen) / self.factor))
        cutoff = sorted(seen)[keep - 1]
        return {k for k, v in values.items() if self.sign * v > cutoff}


class PackReporter:
    """Adapts a pack's reports, `{k: metrics}` per evaluation, to `ray.tune.report`.

    The Tune result carries each configuration's metrics under `cv.MEMBERS`, with its status when it
    ends there: "failed" (its loss turned non-finite), "stopped" (by the pack's `RungRule`) or
    "finished". A failed configuration reports its objective as the worst possible value: Optuna
    then learns that the region is bad (a failed trial would be ignored by TPE). An objective the
    experiment declares final (measured only at the last evaluation) is absent from the reports
    before it, and stays absent: the searcher waits for it. The result's own objective is the best
    of the pack's, for Tune's bookkeeping (and for Tune's ASHA, which runs packs of one).
    """

    def __init__(
        self, metric: str, mode: str, device: str = "cpu", rule: RungRule | None = None
    ) -> None:
        self.metric, self.mode = metric, mode
        self.worst = math.inf if mode == "min" else -math.inf
        self.on_gpu = device.startswith("cuda")
        self.rule = rule
        self.reports = 0

    def __call__(self, step: int, reports: Mapping[int, Mapping[str, Any]]) -> set[int]:
        from ray import tune

        self.reports += 1
        members, values = {}, {}
        for k, metrics in reports.items():
            out = dict(metrics)
            value = out.get(self.metric)
            # A diverged run stops before its final evaluation: a final-only objective is missing.
            if self.metric in out or out.get(DIVERGED):
                if not isinstance(value, (int, float)) or not math.isfinite(value):
                    out[self.metric] = value = self.worst
                values[k] = float(value)
            if DIVERGED in out:
                out[STATUS] = "failed" if out[DIVERGED] else "finished"
            members[str(k)] = out
        running = {k: v for k, v in values.items() if STATUS not in members[str(k)]}
        stop = self.rule.stops(self.reports, running) if self.rule is not None else set()
        for k in stop:
            members[str(k)][STATUS] = "stopped"
        result: dict[str, Any] = {"step": step, MEMBERS: Members(members)}
        if values:
            best = min if self.mode == "min" else max
            result[self.metric] = best(values.values())
        if self.on_gpu:
            # What a user needs to size `resources.gpu`: the most this trial has held so far.
            import torch

            result[GPU_PEAK] = torch.cuda.max_memory_allocated() / 2**20
        tune.report(result)
        return stop


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


def trial_threads(assigned: Mapping[str, float], threads: int | None) -> int:
    """Torch threads for a trial: the spec's, else one per CPU Ray assigned (at least one), so
    trials sharing a node never oversubscribe it (torch's own default is every core)."""
    return threads if threads is not None else max(1, int(assigned.get("CPU", 1)))


def run_trial(
    config: dict[str, Any],
    experiment: str,
    metric: str,
    mode: str,
    asha: Mapping[str, Any] | None = None,
    threads: int | None = None,
) -> None:
    """The function trainable: one pack, all its configurations and their replicas, on the device
    Ray assigned; `asha` (the spec's, for packs of several) stops the worst at each rung; `threads`
    (the spec's `resources.threads`) overrides torch's intra-op threads, else the CPUs assigned."""
    import ray
    import torch

    assigned = ray.get_runtime_context().get_assigned_resources()
    torch.set_num_threads(trial_threads(assigned, threads))
    device, fraction = trial_device(assigned, torch.cuda.is_available())
    if fraction is not None:
        torch.cuda.set_per_process_memory_fraction(fraction, torch.cuda.current_device())
    rule = RungRule(mode, **asha) if asha is not None else None
    reporter = PackReporter(metric, mode, device, rule)
    packing.run_pack(experiment, member_configs(config), reporter, device)
