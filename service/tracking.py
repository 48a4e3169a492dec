"""Driver-side MLflow logging: one writer per sweep, restore-safe and batched.

Trials never talk to MLflow. The driver's `MlflowTracker` (a Ray Tune callback) owns an experiment
per sweep, a parent run for the sweep and one child run per trial, found again by its trial-id tag
after a resume, so a resumed sweep never opens a second run for a trial. Metrics are buffered and
sent with `log_batch` (Ray's stock callback pays one SQLite transaction per metric), and every run
ends FINISHED, FAILED or KILLED.

Library code never sets global MLflow state: the tracking URI is passed in explicitly.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS

from service import conventions as cv
from service import mlflow_view as view
from service.errors import connection_cause, tracking_error
from service.mlflow_writes import MAX_BATCH, MAX_PARAMS, RunWrite, writer_for
from trainables.artifacts import ARTIFACTS
from trainables.config import ConfigError
from trainables.report import FAILURE_REASON

if TYPE_CHECKING:
    from service.spec import Spec

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_DB = "mlflow.db"
MAX_TAG = 8000  # MLflow's longest tag value
FLUSH_EVERY_S = 10.0  # a live curve in the UI, without a write per report of every configuration
REFIT_EVERY_S = 60.0  # the parent run's live x_opt: a refit of each cell costs about a second
NOT_METRICS = set(AUTO_RESULT_KEYS) | {"step", "done", "trial_id", "experiment_tag", FAILURE_REASON}
ARTIFACT_ERROR = cv.PREFIX + "artifact_error"
LOGGED_STEP = cv.PREFIX + "logged_step"  # last step flushed: a restarted trial skips up to it


def default_tracking_uri(root: str | Path = ".") -> str:
    """The embedded default: a SQLite file in the working directory."""
    return f"sqlite:///{(Path(root) / DEFAULT_DB).resolve()}"


def resolve_tracking_uri(uri: str | None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def local_artifact_root(tracking_uri: str) -> str | None:
    """Artifacts beside a SQLite store (`mlartifacts/`); a server chooses its own."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    return (db.parent / "mlartifacts").resolve().as_uri()


def git_sha() -> str:
    """The code version: the checkout's commit (with '-dirty' for local changes) or 'unknown'.

    A job submitted to a cluster runs a copy of the code without its git history; the submitter
    passes its own commit along in SMOOTHSWEEP_GIT_SHA.
    """
    passed = os.environ.get("SMOOTHSWEEP_GIT_SHA")
    if passed:
        return passed
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("-dirty" if dirty else "")) if sha else "unknown"


def sweep_tags(spec: Spec) -> dict[str, str]:
    """The tags of a sweep's parent run, repeated on each trial's run: reproduction and reading."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        code_version = version("smoothsweep")
    except PackageNotFoundError:
        code_version = "unknown"
    return {
        cv.EXPERIMENT: spec.experiment,
        cv.SPEC_SHA256: spec.sha256,
        cv.GIT_SHA: git_sha(),
        cv.CODE_VERSION: code_version,
        cv.OBJECTIVE_METRIC: spec.objective.metric,
        cv.OBJECTIVE_MODE: spec.objective.mode,
        cv.AXES: json.dumps(sorted(spec.axes)),
        cv.SEARCH: json.dumps(spec.search_bounds()),
        **({cv.NUISANCE: json.dumps(spec.nuisance)} if spec.nuisance is not None else {}),
    }


def with_retry(
    call: Callable[[], T], what: str, uri: str, tries: int = 4, outage: bool = False
) -> T:
    """Retry transient tracking failures (a restarting server, a locked SQLite file).

    With `outage`, an unreachable server is not retried here but raised as `_Unreachable`, for the
    `Outbox` to wait out.
    """
    delay = 0.5
    for attempt in range(tries):
        try:
            return call()
        except Exception as exc:  # MLflow raises many types; all are "could not write"
            cause = connection_cause(exc) if outage else None
            if cause is not None:
                raise _Unreachable(cause) from None
            if attempt == tries - 1:
                raise tracking_error(exc, uri, what) from None
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


class Outbox:
    """The tracker's writes, sent in order; while the server is unreachable they wait here.

    A tracking server that restarts or drops off the network for a while must not fail the sweep or
    lose a metric: writes queue up (in memory, on the driver) and go out, in their original order,
    once the server answers again. Order matters: a run is created before its metrics are logged,
    and a deferred write reads the run id only when it is sent. Only an outage longer than
    `patience_s` ends the sweep, with an error that says so (Ray's saved state lets `resume` redo
    what was not recorded).
    """

    RETRY_EVERY_S = 5.0

    def __init__(self, uri: str, patience_s: float | None = None) -> None:
        self.uri = uri
        self.patience_s = (
            float(os.environ.get("SMOOTHSWEEP_TRACKING_PATIENCE_S", "900"))
            if patience_s is None
            else patience_s
        )
        self.pending: deque[tuple[Callable[[], Any], str]] = deque()
        self.down_since: float | None = None
        self.next_try = 0.0

    def put(self, fn: Callable[[], Any], what: str) -> None:
        self.pending.append((fn, what))
        self.drain()

    def drain(self, block: bool = False) -> None:
        """Send what is queued; with `block`, wait for the server (up to the patience)."""
        while self.pending:
            now = time.monotonic()
            if self.down_since is not None and now < self.next_try:
                if not block:
                    return
                time.sleep(self.next_try - now)
            fn, what = self.pending[0]
            try:
                with_retry(fn, what, self.uri, outage=True)
            except _Unreachable as exc:
                self._note_outage(exc.cause)
                if not block:
                    return
                continue
            self.pending.popleft()
            if self.down_since is not None:
                waited = time.monotonic() - self.down_since
                log.warning("tracking server %s is back after %.0f s", self.uri, waited)
                self.down_since = None

    def _note_outage(self, cause: BaseException) -> None:
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            log.warning(
                "tracking server %s unreachable (%s); holding %d write(s) until it is back",
                self.uri,
                type(cause).__name__,
                len(self.pending),
            )
        elif now - self.down_since > self.patience_s:
            raise tracking_error(cause, self.uri, "answer") from None
        self.next_try = now + self.RETRY_EVERY_S


class _Unreachable(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class SweepRecord:
    """The sweep's MLflow experiment and parent run: created once, from the driver, before trials.

    Creating the store here (not in workers) matters: processes opening a fresh SQLite file at once
    race in its schema migration.
    """

    def __init__(self, tracking_uri: str, sweep: str) -> None:
        self.uri = tracking_uri
        self.sweep = sweep
        self.client = MlflowClient(tracking_uri)
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        # Trials the sweep ended before they did (Ctrl-C, SIGTERM): set by the tracker at the end.
        self.unfinished = 0

    def probe(self) -> None:
        """One quick read: is the store there? (Creates a fresh SQLite store, once, here.)"""
        with_retry(
            lambda: self.client.search_experiments(max_results=1), "answer", self.uri, tries=1
        )

    def open(
        self,
        tags: Mapping[str, str],
        spec_json: str | None = None,
        spec: Spec | None = None,
    ) -> SweepRecord:
        """Find or create the experiment and the parent run (idempotent: resume calls it too).

        With the `spec`, the experiment gets its description and UI view, and the parent run the
        sweep's params (`service.mlflow_view`)."""
        exp = with_retry(lambda: self.client.get_experiment_by_name(self.sweep), "read", self.uri)
        if exp is None:
            self.experiment_id = with_retry(
                lambda: self.client.create_experiment(
                    self.sweep, artifact_location=_experiment_artifacts(self.uri, self.sweep)
                ),
                "create the experiment",
                self.uri,
            )
        else:
            self.experiment_id = exp.experiment_id
        for key, value in (view.experiment_tags(spec) if spec is not None else {}).items():
            with_retry(
                lambda key=key, value=value: self.client.set_experiment_tag(
                    self.experiment_id, key, value
                ),
                "tag the experiment",
                self.uri,
            )
        parents = self._search(f"tags.`{cv.ROLE}` = '{cv.ROLE_SWEEP}'")
        if parents:
            self.parent_run_id = parents[0].info.run_id
            if parents[0].info.status != "RUNNING":
                with_retry(
                    lambda: self.client.update_run(self.parent_run_id, status="RUNNING"),
                    "reopen the sweep run",
                    self.uri,
                )
        else:
            run = with_retry(
                lambda: self.client.create_run(
                    self.experiment_id,
                    run_name=self.sweep,
                    tags={**tags, cv.ROLE: cv.ROLE_SWEEP, cv.SWEEP: self.sweep},
                ),
                "create the sweep run",
                self.uri,
            )
            self.parent_run_id = run.info.run_id
            if spec is not None:
                params = [Param(k, v) for k, v in view.sweep_params(spec).items()]
                self._batches("params", params, MAX_PARAMS, "log the sweep's params")
            if spec_json is not None:
                with_retry(
                    lambda: self.client.log_text(self.parent_run_id, spec_json, cv.SPEC_ARTIFACT),
                    "log the spec",
                    self.uri,
                )
        return self

    def trial_runs(self) -> dict[str, Any]:
        """trial id -> existing child run (after a resume)."""
        return {
            r.data.tags[cv.TRIAL_ID]: r
            for r in self._search(f"tags.`{cv.ROLE}` = '{cv.ROLE_TRIAL}'")
        }

    def _search(self, filter_string: str) -> list[Any]:
        runs: list[Any] = []
        token = None
        while True:
            page = with_retry(
                lambda token=token: self.client.search_runs(
                    [self.experiment_id], filter_string, max_results=1000, page_token=token
                ),
                "search runs",
                self.uri,
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def log_metrics(self, values: Mapping[str, float], step: int) -> None:
        self._batches("metrics", _metrics(values, step), MAX_BATCH, "log the sweep's results")

    def _batches(self, kind: str, items: list[Any], size: int, what: str) -> None:
        """The parent run's params or metrics in as few `log_batch` calls as MLflow allows."""
        for start in range(0, len(items), size):
            chunk = {kind: items[start : start + size]}
            with_retry(
                lambda chunk=chunk: self.client.log_batch(self.parent_run_id, **chunk),
                what,
                self.uri,
            )

    def tag(self, key: str, value: str) -> None:
        with_retry(lambda: self.client.set_tag(self.parent_run_id, key, value), "tag", self.uri)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        with_retry(
            lambda: self.client.log_artifact(self.parent_run_id, str(path), folder),
            "log an artifact",
            self.uri,
        )

    def close(self, status: str = "FINISHED") -> None:
        with_retry(
            lambda: self.client.set_terminated(self.parent_run_id, status=status),
            "close the sweep run",
            self.uri,
        )


def _metrics(values: Mapping[str, float], step: int) -> list[Metric]:
    ts = int(time.time() * 1000)
    return [Metric(k, float(v), ts, step) for k, v in sorted(values.items())]


def _experiment_artifacts(uri: str, sweep: str) -> str | None:
    root = local_artifact_root(uri)
    return f"{root}/{sweep}" if root else None


class _TrialRun:
    """Buffered state of one trial's child run."""

    def __init__(
        self, run_id: str | None, logged_step: int, cell: str = "", config: Any = None
    ) -> None:
        self.run_id = run_id
        self.artifact_uri: str | None = None  # known once the run is created
        self.cell = cell
        self.config: Mapping[str, Any] = config or {}
        self.last: dict[str, Any] = {}  # the latest report's metrics, for the sweep's summary
        self.tags: dict[str, str] = {}  # not yet sent: they go with the next metrics
        self.logged_step = logged_step
        self.buffer: list[Metric] = []
        self.params: list[Param] = []  # not yet sent: they go with the first metrics
        self.replicas: list[Metric] = []  # the latest report's per-replica values, for the end
        self.max_step = logged_step
        self.last_flush = time.monotonic()
        self.closed = False


class MlflowTracker(Callback):
    """Ray Tune callback: one child run per configuration under the sweep's parent run.

    A Tune trial trains a pack of configurations (`service.search`); each is a trial of the sweep
    in its own right, with its own run, params, metric history, seeds and status, keyed by
    `cv.member_key` (the Tune trial id in a pack of one). From the spec the tracker knows each
    configuration's cell (its axis values) and seeds (what the experiment's Config makes of it).
    """

    def __init__(self, record: SweepRecord, spec: Spec) -> None:
        import trainables

        self.record = record
        self.tags = sweep_tags(spec)
        self.axes = sorted(spec.axes)
        self.searched = list(spec.search)
        self.config_class = trainables.load(spec.experiment).Config
        self.runs: dict[str, _TrialRun] = {}
        self.existing = record.trial_runs()
        self.lost: dict[str, Any] | None = None
        self.outbox = Outbox(record.uri)
        # A hook's writes, one per run, sent together as it returns (`service.mlflow_writes`)
        self.writer = writer_for(record.client, record.experiment_id, record.uri)
        self.pending: dict[int, RunWrite] = {}
        self.made = len(self.existing)  # runs of the sweep so far: the next one's number
        self.summary = view.LiveSummary(spec)
        for found in self.existing.values():  # after a resume: the trials that already ended
            if found.info.status in ("FINISHED", "FAILED"):
                metrics = {**found.data.metrics, **cv.parse_replicas_tag(
                    found.data.tags.get(cv.REPLICAS))}  # fmt: skip
                if found.info.status == "FAILED":
                    metrics[cv.STATUS] = "failed"
                config = _json_or_empty(found.data.tags.get(cv.CONFIG))
                self.summary.add(found.data.tags.get(cv.CELL, ""), config, metrics)
        self.last_counts = self.last_fit = time.monotonic()

    @property
    def client(self) -> MlflowClient:
        return self.record.client

    def _call(self, fn: Callable[[], Any], what: str) -> None:
        """Queue a write; it is sent now or, while the server is down, as soon as it is back."""
        self.outbox.put(fn, what)

    # --- Tune hooks -------------------------------------------------------------------------------

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self.lost is None:
            # The first step sees every trial that Ray restored. A run whose trial Ray does not
            # know was started after Ray's last saved state: its trial is lost, and the restored
            # searcher will suggest it again under a new id (see _adopt).
            known = {t.trial_id for t in trials}
            self.lost = {
                key: r for key, r in self.existing.items() if key.partition("#")[0] not in known
            }
        self.outbox.drain()  # between results too, so a returning server gets its backlog soon
        self._summarise()

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        step = int(result.get("step", result.get("training_iteration", 0)))
        for index, metrics in (result.get(cv.MEMBERS) or {}).items():
            run = self._ensure_run(trial, int(index))
            # Popped before Tune stores the result, so plot data never bloats Tune's saved state.
            payloads = metrics.pop(ARTIFACTS, None)
            if run.closed:
                continue  # a pack that Ray restarted replays a configuration that already ended
            run.last = metrics
            if payloads:
                self._log_artifacts(run, payloads)
            if step > run.max_step:
                # A restarted trial (its node died, or the driver) replays from step 0 with the
                # same seeds: steps already logged, or still buffered, are not logged twice.
                ts = int(time.time() * 1000)
                means, each = [], []
                for k, v in metric_items(metrics):
                    (each if "/" in k else means).append(Metric(k, v, ts, step))
                run.buffer.extend(means)
                # Each replica's values (`test_mse/r3`) are logged once, as the run ends: the
                # history is the mean's, and R + 1 times fewer metrics keep every write cheap.
                run.replicas = each
                run.max_step = step
                stale = time.monotonic() - run.last_flush > FLUSH_EVERY_S
                if len(run.buffer) >= MAX_BATCH or stale:
                    self._flush(run)
            status = metrics.get(cv.STATUS)
            if status == "failed":
                self._close(run, "FAILED", str(metrics.get(FAILURE_REASON, "diverged")))
            elif status == "stopped":
                self._close(run, "FINISHED", stopped=f"step {step}")
            elif status == "finished":
                self._close(run, "FINISHED")
        self._send()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for run in self._pack_runs(trial):
            self._close(run, "FINISHED")
        self._send()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for run in self._pack_runs(trial):
            self._close(run, "FAILED", error_line(trial))
        self._send()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for trial in trials:
            for k in range(len(cv.member_configs(trial.config))):
                run = self.runs.get(self._key(trial, k))
                if run is not None and not run.closed:
                    self._close(run, "KILLED", "the sweep ended before this trial did")
                    self.record.unfinished += 1
        self._send()
        reason = "lost: the driver died before Ray saved this trial; it was not re-run"
        for found in (self.lost or {}).values():
            if found.info.status == "RUNNING":
                rid = found.info.run_id
                self._call(
                    lambda rid=rid: self.client.set_tag(rid, cv.FAILURE_REASON, reason), "tag"
                )
                self._call(lambda rid=rid: self.client.set_terminated(rid, "KILLED"), "end a run")
        self._summarise(final=True)
        self.outbox.drain(block=True)  # the sweep is not over until MLflow has all of it

    # --- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _key(trial: Any, index: int) -> str:
        return cv.member_key(trial.trial_id, index, len(cv.member_configs(trial.config)))

    def _write(self, run: _TrialRun) -> RunWrite:
        """This hook's writes for the run, sent when the hook returns."""
        if id(run) not in self.pending:
            self.pending[id(run)] = RunWrite(run, step_tag=LOGGED_STEP)
        return self.pending[id(run)]

    def _send(self) -> None:
        writes, self.pending = list(self.pending.values()), {}
        if writes:
            self.writer.queue(writes, self._call)

    def _pack_runs(self, trial: Any) -> list[_TrialRun]:
        """The runs of every configuration of a pack (created for those that never reported)."""
        return [self._ensure_run(trial, k) for k in range(len(cv.member_configs(trial.config)))]

    def _ensure_run(self, trial: Any, index: int) -> _TrialRun:
        key = self._key(trial, index)
        if key in self.runs:
            return self.runs[key]
        config = cv.member_configs(trial.config)[index]
        found = self.existing.get(key) or self._adopt(key, config)
        if found is not None:
            logged = int(found.data.tags.get(LOGGED_STEP, "0"))
            run = _TrialRun(found.info.run_id, logged, found.data.tags.get(cv.CELL, ""), config)
            run.artifact_uri = found.info.artifact_uri
            if found.info.status == "FINISHED":
                # A configuration that ended within a pack Ray re-runs: its record is complete.
                run.closed = True
            elif found.info.status != "RUNNING":
                self._call(
                    lambda: self.client.update_run(run.run_id, status="RUNNING"), "reopen a run"
                )
                if cv.FAILURE_REASON in found.data.tags:  # why it stopped no longer holds
                    self._call(lambda: self.client.delete_tag(run.run_id, cv.FAILURE_REASON), "tag")
        else:
            cell = cv.cell_label({a: config[a] for a in self.axes if a in config})
            tags = {
                **self.tags,
                cv.ROLE: cv.ROLE_TRIAL,
                cv.PARENT_RUN_ID: self.record.parent_run_id,
                cv.TRIAL_ID: key,
                cv.PACK_ID: trial.trial_id,
                cv.CELL: cell,
                cv.CONFIG: cv.dumps(config),
                **self._seed_tags(config),
            }
            run = _TrialRun(None, 0, cell, config)  # its id arrives when the create is sent
            self.made += 1
            self._write(run).create = (view.run_name(config, self.axes, self.searched, self.made),
                                       tags)  # fmt: skip
            # sent with the first metrics (one write less per configuration: 7 ms on SQLite)
            run.params = [Param(k, str(v)[:6000]) for k, v in sorted(config.items())]
        self.runs[key] = run
        return run

    def _seed_tags(self, config: Mapping[str, Any]) -> dict[str, str]:
        """The replicas' seeds as the experiment derives them; none for a config it rejects (that
        trial fails with the reason, and the driver must not fail with it)."""
        try:
            seeds = self.config_class.from_mapping(config).seeds
        except ConfigError:
            return {}
        return {cv.SEED: str(seeds[0]), cv.SEEDS: ",".join(map(str, seeds))}

    def _adopt(self, key: str, config: Mapping[str, Any]) -> Any:
        """A lost run with this configuration's exact config: the same configuration, suggested
        again after a resume.

        The restored searcher replays its random state, so it usually suggests a lost trial's
        config again; continuing that run (same seeds, so the same values) keeps one run per trial.
        """
        wanted = cv.dumps(dict(config))
        for old, found in list((self.lost or {}).items()):
            if found.data.tags.get(cv.CONFIG) == wanted:
                del self.lost[old]
                rid = found.info.run_id
                self._call(lambda rid=rid: self.client.set_tag(rid, cv.TRIAL_ID, key), "re-tag")
                return found
        return None

    def _log_artifacts(self, run: _TrialRun, payloads: Mapping[str, Any]) -> None:
        """Each payload as JSON on the trial's run. Rendering a PNG takes ~0.15 s, which on the
        driver would cost every trial of a sweep of small trials more than its training does; the
        sweep's best configurations get theirs when it ends (`service.report.render_best_plots`),
        any other on demand (`smoothsweep plots`)."""
        self._write(run).artifacts.update(payloads)

    def _flush(self, run: _TrialRun) -> None:
        if run.buffer or run.params or run.tags:
            w = self._write(run)
            w.metrics.extend(run.buffer)
            w.params.extend(run.params)
            w.tags.update(run.tags)
            run.logged_step = max((m.step for m in run.buffer), default=run.logged_step)
            run.buffer, run.params, run.tags = [], [], {}
        run.last_flush = time.monotonic()

    def _close(self, run: _TrialRun, status: str, reason: str = "", stopped: str = "") -> None:
        if run.closed:
            return
        replicas = {m.key: m.value for m in run.replicas}
        tag = cv.replicas_tag(replicas)
        if replicas and len(tag) <= MAX_TAG:
            run.tags[cv.REPLICAS] = tag  # in the last batch: no write of its own
        elif replicas:  # too many replicas for one tag: as metrics, as older stores hold them
            run.buffer.extend(run.replicas)
        run.replicas = []
        self._flush(run)
        metrics = {**run.last, **replicas}
        if status == "FAILED":
            metrics[cv.STATUS] = "failed"
        if status != "KILLED":
            self.summary.add(run.cell, run.config, metrics)
        w = self._write(run)
        if reason:
            w.tags[cv.FAILURE_REASON] = reason[:5000]
        if stopped:
            w.tags[cv.STOPPED_EARLY] = stopped
        w.end = status
        run.closed = True

    def _summarise(self, final: bool = False) -> None:
        """The parent run's live results: counts and bests now and then, x_opt less often."""
        now = time.monotonic()
        values: dict[str, float] = {}
        if final or now - self.last_counts > FLUSH_EVERY_S:
            values.update(self.summary.counts())
            self.last_counts = now
        if self.summary.unfitted and (final or now - self.last_fit > REFIT_EVERY_S):
            try:
                values.update(self.summary.fit())
            except Exception as exc:  # a live estimate must never end a sweep
                log.warning("live x_opt skipped: %s", exc)
            self.last_fit = now
        if values:
            metrics, parent = _metrics(values, self.summary.ended), self.record.parent_run_id
            self._call(
                lambda: self.client.log_batch(parent, metrics=metrics), "log the sweep's results"
            )


def _json_or_empty(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def metric_items(result: Mapping[str, Any]) -> Iterable[tuple[str, float]]:
    """The trainable's own numeric metrics from a Tune result (Ray's bookkeeping left out)."""
    for key, value in result.items():
        if key in NOT_METRICS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        yield key, float(value)


def error_line(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    text = ""
    if path and os.path.exists(path):
        lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
        text = lines[-1] if lines else ""
    return text or "the trial raised an error (see the Ray logs)"
