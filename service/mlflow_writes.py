"""The trial runs' writes, sent as few round trips as the store allows.

A sweep's driver writes every configuration's run: create it, log its params and metrics, tag it,
end it. Through MLflow's client each of those is its own call, and on a SQL store its own
transaction (4-16 ms on SQLite, mostly the ORM's per-call work, not the disk). A pack of 48
configurations ending at one report is then 48 x 3 transactions while its trial waits on the driver
(`benchmarks/packing.py`). So the tracker hands each Tune hook's writes over as one list of
`RunWrite`s, and:

- `SqlWrites` sends them in one transaction on a SQL store (the embedded SQLite file, PostgreSQL),
  as bulk SQLAlchemy Core statements on MLflow's own tables: the same rows MLflow's `create_run` /
  `log_batch` / `set_terminated` write (`tests/service/test_mlflow_writes.py` reads both back and
  compares);
- `ClientWrites` makes the client calls one by one, each its own item in the tracker's outbox, for
  any other store (a tracking server); MLflow's limits per `log_batch` apply there.

Either way a run's writes keep their order (create, then params, metrics and tags, then its end),
and its plot data goes to its artifact store after them, straight to the repository MLflow would
pick (the client's `log_dict` first reads the run back to find it: one query per run saved).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mlflow.entities import Metric, Param, RunTag

MAX_BATCH = 900  # MLflow accepts 1000 metrics per log_batch call
MAX_PARAMS = 100  # and 100 params
USER_TAG = "mlflow.user"
RUN_NAME_TAG = "mlflow.runName"
LATEST = ("value", "timestamp", "step", "is_nan")  # what a latest_metrics row holds


class Target(Protocol):
    """What a write is for: a trial run whose id (and artifact location) may arrive on sending."""

    run_id: str | None
    artifact_uri: str | None


@dataclass
class RunWrite:
    """One run's share of a hook's writes, in the order they are sent."""

    run: Target
    create: tuple[str, dict[str, str]] | None = None  # run name, tags
    params: list[Param] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    step_tag: str | None = None  # a tag for the last step sent, updated with each metrics batch
    end: str | None = None  # FINISHED, FAILED or KILLED
    artifacts: dict[str, Any] = field(default_factory=dict)  # name -> JSON payload
    start_ms: int = field(default_factory=lambda: int(time.time() * 1000))


Queue = Callable[[Callable[[], Any], str], None]  # the tracker's outbox: (write, what it is)


def writer_for(client: Any, experiment_id: str, tracking_uri: str) -> ClientWrites | SqlWrites:
    """`SqlWrites` where the client talks to a SQL store directly, else `ClientWrites`."""
    if SqlWrites.supports(_store(client)):
        return SqlWrites(client, experiment_id, tracking_uri)
    return ClientWrites(client, experiment_id, tracking_uri)


class ClientWrites:
    """Each write one MLflow client call, queued separately: a write that failed is retried
    alone, so a retried create can never make a second run."""

    def __init__(self, client: Any, experiment_id: str, tracking_uri: str) -> None:
        self.client, self.experiment_id, self.uri = client, experiment_id, tracking_uri

    def queue(self, writes: Iterable[RunWrite], put: Queue) -> None:
        for w in writes:
            if w.create is not None:
                put(lambda w=w: self._create(w), "create a trial run")
            params, metrics = list(w.params), list(w.metrics)
            tags = [RunTag(k, v) for k, v in w.tags.items()]
            while params or metrics or tags:
                chunk = {"params": params[:MAX_PARAMS], "metrics": metrics[:MAX_BATCH],
                         "tags": tags}  # fmt: skip
                params, metrics, tags = params[MAX_PARAMS:], metrics[MAX_BATCH:], []
                if chunk["metrics"] and w.step_tag is not None:
                    # With each batch, so that after a crash the tag names what really arrived.
                    last = max(m.step for m in chunk["metrics"])
                    chunk["tags"].append(RunTag(w.step_tag, str(last)))
                put(lambda w=w, c=chunk: self.client.log_batch(w.run.run_id, **c), "log metrics")
            if w.end is not None:
                put(lambda w=w: self.client.set_terminated(w.run.run_id, w.end), "end a run")
            _queue_artifacts(w, self.uri, put)

    def _create(self, w: RunWrite) -> None:
        assert w.create is not None
        name, tags = w.create
        made = self.client.create_run(
            self.experiment_id, start_time=w.start_ms, run_name=name, tags=tags
        )
        w.run.run_id, w.run.artifact_uri = made.info.run_id, made.info.artifact_uri


class SqlWrites:
    """A hook's writes for all its runs in one transaction on the store's own tables."""

    def __init__(self, client: Any, experiment_id: str, tracking_uri: str) -> None:
        # No store or engine is held: Tune pickles its callbacks, and the client pickles (MLflow
        # caches the store per URI, so asking the client for it again costs nothing).
        self.client, self.experiment_id, self.uri = client, experiment_id, tracking_uri
        self.location = client.get_experiment(experiment_id).artifact_location

    @staticmethod
    def supports(store: Any) -> bool:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        return isinstance(store, SqlAlchemyStore) and hasattr(store, "ManagedSessionMaker")

    def queue(self, writes: Iterable[RunWrite], put: Queue) -> None:
        from mlflow.utils.uri import append_to_uri_path

        writes = list(writes)
        for w in writes:
            if w.create is not None and w.run.run_id is None:
                # The id is ours to choose (as the store's create_run does): known before the
                # transaction, so a retried transaction writes the same run, never a second one.
                w.run.run_id = uuid.uuid4().hex
                w.run.artifact_uri = append_to_uri_path(self.location, w.run.run_id, "artifacts")
        if any(_has_rows(w) for w in writes):
            put(lambda: self._send(writes), "log trial runs")
        for w in writes:
            _queue_artifacts(w, self.uri, put)

    def _send(self, writes: list[RunWrite]) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.store.tracking.dbmodels.models import (
            SqlLatestMetric,
            SqlMetric,
            SqlParam,
            SqlRun,
            SqlTag,
        )

        runs, tags_t, params_t = SqlRun.__table__, SqlTag.__table__, SqlParam.__table__
        metrics_t, latest_t = SqlMetric.__table__, SqlLatestMetric.__table__
        store = _store(self.client)
        # SQLAlchemy Core on MLflow's own tables, in bulk: the ORM's unit of work spent ~3 ms of
        # driver time per run and hook (cascades, one INSERT per object) next to the trials.
        with store.ManagedSessionMaker(read_only=False) as session:
            made = {w.run.run_id for w in writes if w.create is not None}
            # Every other run must exist and be active, as MLflow's log_batch requires; what
            # they hold already (tags, params, latest values) is read in one query each.
            others = {w.run.run_id for w in writes if w.run.run_id not in made}
            held_tags: set[tuple[str, str]] = set()
            held_params: dict[tuple[str, str], str] = {}
            # (run, key) -> [its latest row, "held" (stored), "new" (to insert) or "changed"]
            latest: dict[tuple[str, str], list[Any]] = {}
            if others:
                stage = dict(session.execute(_select(runs, others, "lifecycle_stage")).all())
                bad = [r for r in sorted(others) if stage.get(r) != "active"]
                if bad:
                    raise MlflowException(f"run {bad[0]} is missing or deleted; cannot log to it")
                held_tags = set(session.execute(_select(tags_t, others)).all())
                held_params = {
                    (r, k): v for r, k, v in session.execute(_select(params_t, others, "value"))
                }
                for r, k, *row in session.execute(_select(latest_t, others, *LATEST)):
                    latest[(r, k)] = [dict(zip(LATEST, row)), "held"]
            new_runs, ends, metric_rows = [], [], []
            tags: dict[tuple[str, str], str] = {}
            params: dict[tuple[str, str], str] = {}
            for w in writes:
                rid = w.run.run_id
                run_tags = _tags(w)
                if w.create is not None:
                    name, created = w.create
                    run_tags = {RUN_NAME_TAG: name, **created, **run_tags}
                    new_runs.append(dict(
                        run_uuid=rid, name=name, artifact_uri=w.run.artifact_uri,
                        experiment_id=int(self.experiment_id), source_type="UNKNOWN",
                        source_name="", entry_point_name="", source_version="",
                        user_id=run_tags.get(USER_TAG, "unknown"), status="RUNNING",
                        start_time=w.start_ms, end_time=None, deleted_time=None,
                        lifecycle_stage="active",
                    ))  # fmt: skip
                tags.update(((rid, k), v) for k, v in run_tags.items())
                for p in w.params:
                    old = held_params.get((rid, p.key), params.get((rid, p.key)))
                    if old is not None and old != p.value:  # MLflow's rule: a param never changes
                        raise MlflowException(
                            f"param {p.key!r} of run {rid} is {old!r}; cannot log {p.value!r}"
                        )
                    params[(rid, p.key)] = p.value
                rows = _metric_rows(store, rid, w.metrics)
                metric_rows += rows
                for m in rows:
                    old = latest.get((rid, m["key"]))
                    if old is None:
                        latest[(rid, m["key"])] = [m, "new"]
                    elif _order(m) > _order(old[0]):  # MLflow's: by step, then time, then value
                        old[:] = [m, "new" if old[1] == "new" else "changed"]
                if w.end is not None:
                    ended = int(time.time() * 1000)
                    ends.append({"b_run": rid, "b_status": w.end, "b_end_time": ended})
            _insert(session, runs, new_runs)
            _insert(session, tags_t, [
                {"run_uuid": r, "key": k, "value": v} for (r, k), v in tags.items()
                if (r, k) not in held_tags])  # fmt: skip
            _update(session, tags_t, ("value",), [
                {"b_run": r, "b_key": k, "b_value": v} for (r, k), v in tags.items()
                if (r, k) in held_tags])  # fmt: skip
            _insert(session, params_t, [
                {"run_uuid": r, "key": k, "value": v} for (r, k), v in params.items()
                if (r, k) not in held_params])  # fmt: skip
            _insert(session, metrics_t, metric_rows)
            _insert(session, latest_t, [row for row, state in latest.values() if state == "new"])
            _update(session, latest_t, LATEST, [
                {"b_run": r["run_uuid"], "b_key": r["key"], **{f"b_{c}": r[c] for c in LATEST}}
                for r, state in latest.values() if state == "changed"])  # fmt: skip
            _update(session, runs, ("status", "end_time"), ends, keyed=("run_uuid",))


def _store(client: Any) -> Any:
    return getattr(getattr(client, "_tracking_client", None), "store", None)


def _tags(w: RunWrite) -> dict[str, str]:
    """The write's tags, with its step tag (one transaction: it holds for all its metrics)."""
    if w.step_tag is None or not w.metrics:
        return w.tags
    return {**w.tags, w.step_tag: str(max(m.step for m in w.metrics))}


def _has_rows(w: RunWrite) -> bool:
    return bool(w.create or w.params or w.metrics or w.tags or w.end)


def _metric_rows(store: Any, run_id: str, metrics: list[Metric]) -> list[dict[str, Any]]:
    """The metrics as MLflow stores them: each distinct one once, NaN as 0 with its flag."""
    rows, seen = [], set()
    for m in metrics:
        identity = (m.key, m.timestamp, m.step, "nan" if math.isnan(m.value) else m.value)
        if identity in seen:
            continue
        seen.add(identity)
        is_nan, value = store.sanitize_metric_value(m.value)
        rows.append({"run_uuid": run_id, "key": m.key, "value": value, "timestamp": m.timestamp,
                     "step": m.step, "is_nan": is_nan})  # fmt: skip
    return rows


def _order(row: dict[str, Any]) -> tuple[Any, ...]:
    return row["step"], row["timestamp"], row["value"]


def _select(table: Any, run_ids: set[str], *columns: str) -> Any:
    """(run_uuid, [key,] *columns) of these runs' rows; `key` where the table has one."""
    from sqlalchemy import select

    keys = [
        table.c.run_uuid,
        *([table.c.key] if "key" in table.c else []),
        *(table.c[c] for c in columns),
    ]
    return select(*keys).where(table.c.run_uuid.in_(sorted(run_ids)))


def _insert(session: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    from sqlalchemy import insert

    if rows:
        session.execute(insert(table), rows)


def _update(
    session: Any,
    table: Any,
    columns: Iterable[str],
    rows: list[dict[str, Any]],
    keyed: tuple[str, ...] = ("run_uuid", "key"),
) -> None:
    """One executemany UPDATE: each row gives `b_run` (and `b_key`) and `b_<column>`."""
    from sqlalchemy import bindparam, update

    if not rows:
        return
    names = {"run_uuid": "b_run", "key": "b_key"}
    where = [table.c[k] == bindparam(names[k]) for k in keyed]
    session.execute(
        update(table).where(*where).values({c: bindparam(f"b_{c}") for c in columns}), rows
    )


def _queue_artifacts(w: RunWrite, tracking_uri: str, put: Queue) -> None:
    for name, payload in w.artifacts.items():
        put(
            lambda name=name, payload=payload: _log_json(w.run, tracking_uri, payload, name),
            "log a plot's data",
        )


def _log_json(run: Target, tracking_uri: str, payload: Any, name: str) -> None:
    """`payload` as `<name>.json` in the run's artifacts (what `MlflowClient.log_dict` writes, less
    its indentation)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    if run.artifact_uri is None:
        raise RuntimeError("the run's artifact location is unknown: was it created?")
    repo = get_artifact_repository(run.artifact_uri, tracking_uri=tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.json"
        # Compact: with `indent`, json leaves its C encoder for Python (10x slower on curves).
        path.write_text(json.dumps(payload, separators=(",", ":"), default=str))
        repo.log_artifact(str(path))
