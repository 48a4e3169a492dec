"""Names shared by the writer (`tracking`) and the reader (`analysis`) of MLflow runs.

One MLflow experiment per sweep (named after the sweep); in it one parent run for the sweep and one
child run per trial. Everything the analysis needs is recoverable from these tags, so a sweep can be
analysed from the tracking server alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

PREFIX = "smoothsweep."

ROLE = PREFIX + "role"  # "sweep" on the parent run, "trial" on each child run
ROLE_SWEEP = "sweep"
ROLE_TRIAL = "trial"
PARENT_RUN_ID = "mlflow.parentRunId"  # MLflow's own tag: nests child runs in the UI

SWEEP = PREFIX + "sweep"  # sweep name (also the MLflow experiment name)
EXPERIMENT = PREFIX + "experiment"  # trainable name, e.g. "sinusoid"
SPEC_SHA256 = PREFIX + "spec_sha256"  # hash of the resolved spec (after profile and overrides)
GIT_SHA = PREFIX + "git_sha"  # code version; "unknown" outside a git checkout
CODE_VERSION = PREFIX + "code_version"  # package version
OBJECTIVE_METRIC = PREFIX + "objective_metric"
OBJECTIVE_MODE = PREFIX + "objective_mode"
AXES = PREFIX + "axes"  # JSON list of axis names, e.g. ["width"]
SEARCH = (
    PREFIX + "search"
)  # JSON {name: {"low": .., "high": .., "log": ..}} of searched floats/ints

NUISANCE = PREFIX + "nuisance"  # JSON list: the searched parameters the analysis profiles out
OVERLAY = PREFIX + "overlay_sweep"  # the companion sweep drawn on the same curve (e.g. the GP)

TRIAL_ID = PREFIX + "trial_id"  # Ray Tune trial id: the key that makes logging restore-safe
CELL = PREFIX + "cell"  # axis cell of the trial, e.g. "width=1000"
CONFIG = PREFIX + "config"  # JSON of the trial's full config, with types
SEED = PREFIX + "seed"  # first seed
SEEDS = PREFIX + "seeds"  # all replica seeds, comma separated
FAILURE_REASON = PREFIX + "failure_reason"  # why a FAILED/KILLED trial ended
ENDED_BY = PREFIX + "ended_by"  # on a sweep's run: the budget that ended it early
EXTENDS = PREFIX + "extends"  # on a sweep's run: the earlier sweep it extends (warm-started from)

SPEC_ARTIFACT = "spec.json"  # the resolved spec, on the parent run
# Each replica's final values, as JSON {metric: [value of replica 0, 1, ...]}: a tag, not R metrics
# per metric, so the UI's charts and column picker show the means (stores written before this tag
# hold them as metrics `test_mse/r3`, which the reader still takes).
REPLICAS = PREFIX + "replicas"

# The keys of a trainable's own report (`diverged`, `failure_reason`, `artifacts`) are defined once,
# in `trainables.report`; the writer reads them from there. The reader sees `diverged` as a metric.


def replica_metric(metric: str, replica: int) -> str:
    """Name of one replica's value of a metric: the plain name holds the mean over replicas."""
    return f"{metric}/r{replica}"


def parse_replica_metric(name: str) -> tuple[str, int] | None:
    """Inverse of `replica_metric`; None for a plain (mean) metric name."""
    base, sep, tail = name.rpartition("/r")
    if not sep or not tail.isdigit():
        return None
    return base, int(tail)


def replicas_tag(metrics: Mapping[str, float]) -> str:
    """The REPLICAS tag of a run's per-replica metrics (`test_mse/r3` -> test_mse[3]); a value
    missing for a replica is null."""
    table: dict[str, dict[int, float]] = {}
    for name, value in metrics.items():
        parsed = parse_replica_metric(name)
        if parsed is not None:
            table.setdefault(parsed[0], {})[parsed[1]] = value
    return dumps(
        {m: [_json_number(v.get(r)) for r in range(max(v) + 1)] for m, v in sorted(table.items())}
    )


def parse_replicas_tag(text: str | None) -> dict[str, float]:
    """Inverse of `replicas_tag`: {"test_mse/r3": value}; a malformed tag reads as none."""
    if not text:
        return {}
    try:
        table = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return {
        replica_metric(m, r): float("nan") if v is None else float(v)
        for m, values in table.items()
        for r, v in enumerate(values)
    }


def _json_number(value: float | None) -> float | None:
    """JSON has no NaN or infinity: a diverged replica's value is written as null."""
    import math

    return value if value is not None and math.isfinite(value) else None


def cell_label(cell: Mapping[str, Any]) -> str:
    """A stable, readable label of an axis cell: 'entanglement=9.42,width=64'."""
    return ",".join(f"{k}={cell[k]}" for k in sorted(cell)) or "all"


def dumps(value: Any) -> str:
    """Canonical JSON used for tags and hashes: sorted keys, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


# --- a pack: the configurations one Tune trial trains as one stacked model ------------------------
# Written by the trial (service.trial), read by the searcher (service.search) and the tracker.

PACK = "pack"  # in a Tune trial's config: the list of each configuration's searched values
MEMBERS = "members"  # in a Tune result: {"k": configuration k's metrics at this report}
STATUS = "status"  # in a member's metrics: "running", or how it ended (ENDINGS)
ENDINGS = ("finished", "failed", "stopped")  # trained to the end, diverged, stopped early
PACK_ID = PREFIX + "pack"  # tag of a configuration's run: the Tune trial that trained it
STOPPED_EARLY = PREFIX + "stopped_early"  # tag: the rung (and step) where a pack stopped it


class Members(Mapping[str, dict[str, Any]]):
    """`result[MEMBERS]` as the trainable reports it: each configuration's metrics, by index.

    Not a dict on purpose. Tune flattens every dict in a result and keeps running statistics (min,
    max, mean, last-n) of each numeric leaf, JSON-encoding all of them into its experiment state
    after every result: for a pack of 48 configurations that is ~1,200 series and ~70 ms of
    driver time per result, which nothing reads (the tracker, searcher and progress line read the
    members themselves). Tune flattens only dicts, so this passes through whole. `.data` is the
    dict.
    """

    def __init__(self, data: Mapping[str, dict[str, Any]]) -> None:
        self.data = dict(data)

    def __getitem__(self, key: str) -> dict[str, Any]:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        # Short on purpose: Tune formats every result into a debug f-string, logged or not.
        return f"Members(<{len(self.data)} configurations>)"


def ended(status: Any) -> bool:
    return status in ENDINGS


def members(result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each configuration's metrics in a Tune result: `result[MEMBERS]` as the trainable reported
    it, or rebuilt from the flattened keys `members/<k>/<metric>` that Tune hands its searcher
    (its metric names, `test_mse/r3`, may hold the delimiter too)."""
    nested = result.get(MEMBERS)
    if isinstance(nested, Mapping):
        return {str(k): dict(v) for k, v in nested.items()}
    out: dict[str, dict[str, Any]] = {}
    prefix = MEMBERS + "/"
    for key, value in result.items():
        if isinstance(key, str) and key.startswith(prefix):
            index, _, metric = key[len(prefix) :].partition("/")
            if metric:
                out.setdefault(index, {})[metric] = value
    return out


def member_key(trial_id: str, index: int, size: int) -> str:
    """A configuration's key (its run's TRIAL_ID tag): the trial id itself in a pack of one."""
    return trial_id if size == 1 else f"{trial_id}#{index}"


def member_configs(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A pack's configurations in full: the shared values with each one's searched values."""
    shared = {k: v for k, v in config.items() if k != PACK}
    return [{**shared, **member} for member in config.get(PACK) or [{}]]
