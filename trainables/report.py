"""What a trainable tells its caller: the reporter protocol, the report's keys, declared metrics.

A run calls `report(step, metrics)` at every evaluation with flat metrics: each metric's mean over
the replicas under its plain name and each replica's value under `name/rK` (`summarise`). The final
report also carries `DIVERGED` and, when training stopped on a non-finite loss, `FAILURE_REASON`;
plot data travels under `ARTIFACTS`. These keys belong to the trainables; the service reads them.

Every experiment declares the metrics it reports (`Config.metrics()`, built with `declare`), with
the direction that is better, so that a spec can be checked before any compute is spent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from torch import Tensor

from trainables.artifacts import ARTIFACTS

DIVERGED = "diverged"  # 1.0 when training stopped on a non-finite loss, else 0.0 (final report)
FAILURE_REASON = "failure_reason"  # why it diverged, one line naming the replicas and the step
REPORT_KEYS = (DIVERGED, FAILURE_REASON, ARTIFACTS)

Mode = Literal["min", "max"]
MAX_REPLICA_METRICS = 32  # beyond this many replicas, per-replica metrics would flood the tracker


class Reporter(Protocol):
    """Called at every evaluation with the step and flat metrics; returns True to stop early."""

    def __call__(self, step: int, metrics: Mapping[str, Any]) -> bool | None: ...


def no_report(step: int, metrics: Mapping[str, Any]) -> bool:
    return False


@dataclass(frozen=True)
class Metric:
    """A reported metric: which direction is better (None: a diagnostic with no better side) and
    whether it is measured only at the final evaluation (robustness under attack, say)."""

    mode: Mode | None
    final: bool = False


def declare(
    minimise: Iterable[str] = (),
    maximise: Iterable[str] = (),
    diagnostics: Iterable[str] = (),
    *,
    final: bool = False,
) -> dict[str, Metric]:
    """Metric declarations by direction: `{**declare(minimise=["test_mse"]), ...}`."""
    out = {name: Metric("min", final) for name in minimise}
    out.update({name: Metric("max", final) for name in maximise})
    out.update({name: Metric(None, final) for name in diagnostics})
    return out


def summarise(per_replica: Mapping[str, Tensor]) -> dict[str, float]:
    """{metric: [R]} -> the mean under the plain name plus `metric/rK` for each replica.

    Past `MAX_REPLICA_METRICS` replicas (1,000 restarts of a tiny net, say) the replicas are
    summarised instead, by `metric/std`, `metric/min` and `metric/max`.
    """
    out: dict[str, float] = {}
    for name, values in per_replica.items():
        vals = values.detach().double().cpu().flatten()
        out[name] = vals.mean().item()
        if len(vals) <= MAX_REPLICA_METRICS:
            out.update({f"{name}/r{r}": v for r, v in enumerate(vals.tolist())})
        else:
            out.update({f"{name}/std": vals.std().item(), f"{name}/min": vals.min().item(),
                        f"{name}/max": vals.max().item()})  # fmt: skip
    return out


def diverged(reason: str) -> dict[str, Any]:
    """The report keys of a run that stopped on a non-finite value."""
    return {DIVERGED: 1.0, FAILURE_REASON: reason}
