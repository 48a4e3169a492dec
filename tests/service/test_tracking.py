"""Driver-side MLflow logging against a real SQLite store, driven by stand-in Tune trials."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest
from mlflow.tracking import MlflowClient

from service import conventions as cv
from service import tracking
from service.mlflow_writes import ClientWrites
from service.spec import load_spec
from service.tracking import MlflowTracker, SweepRecord

SPEC = load_spec(
    {
        "name": "sw",
        "experiment": "sinusoid",
        "objective": {"metric": "test_mse", "mode": "min"},
        "axes": {"width": [8, 16]},
        "search": {"sigma_inv": {"low": 0.1, "high": 10.0, "log": True}},
    }
)


@dataclass
class FakeTrial:
    trial_id: str
    config: dict
    last_result: dict = field(default_factory=dict)
    error_file: str | None = None

    def __str__(self) -> str:
        return f"run_trial_{self.trial_id}"


def result(step: int, mse: float, member: int = 0, **extra) -> dict:
    """A Tune result of a pack (here of one configuration) as `service.trial` reports it."""
    metrics = {"test_mse": mse, "test_mse/r0": mse, "train_mse": mse / 2, **extra}
    if "diverged" in extra:
        metrics[cv.STATUS] = "failed" if extra["diverged"] else "finished"
    return {"test_mse": mse, "step": step, "training_iteration": step, "time_this_iter_s": 0.1,
            cv.MEMBERS: {str(member): metrics}}  # fmt: skip


@pytest.fixture(autouse=True, params=["sql", "client"])
def writes(request, monkeypatch):
    """Every test on both write paths: one transaction per hook (a SQL store, as here) and the
    client's calls one by one (what a tracking server gets)."""
    if request.param == "client":
        monkeypatch.setattr(tracking, "writer_for", ClientWrites)
    return request.param


@pytest.fixture
def store(tmp_path):
    return f"sqlite:///{tmp_path}/mlflow.db"


def new_tracker(uri: str) -> MlflowTracker:
    record = SweepRecord(uri, "sw").open(tracking.sweep_tags(SPEC))
    return MlflowTracker(record, SPEC)


def runs_by_trial(uri: str) -> dict:
    return {
        r.data.tags[cv.TRIAL_ID]: r for r in SweepRecord(uri, "sw").open({}).trial_runs().values()
    }


def steps(uri: str, run_id: str) -> list[int]:
    return [m.step for m in MlflowClient(uri).get_metric_history(run_id, "test_mse")]


def feed(tracker: MlflowTracker, trial: FakeTrial, *results: dict) -> None:
    for r in results:
        trial.last_result = r
        tracker.on_trial_result(0, [], trial, r)


def test_metrics_are_batched_and_bookkeeping_is_left_out(store, monkeypatch, writes):
    tracker = new_tracker(store)
    batches = []  # the metrics of each write that carried some
    if writes == "client":
        real_log = tracker.client.log_batch

        def log_batch(*args, **kwargs):
            batches.append(kwargs["metrics"])
            return real_log(*args, **kwargs)

        monkeypatch.setattr(tracker.client, "log_batch", log_batch)
    else:
        real_send = tracker.writer._send

        def send(run_writes):
            batches.extend(w.metrics for w in run_writes)
            return real_send(run_writes)

        monkeypatch.setattr(tracker.writer, "_send", send)
    a = FakeTrial("a", {"seed": 3, "sigma_inv": 0.5})
    tracker.on_step_begin(0, [a])
    feed(tracker, a, result(1, 0.9), result(2, 0.5), result(3, 0.4))
    tracker.on_trial_complete(0, [], a)
    batches = [b for b in batches if b]
    # 3 results x 2 means in one batch; each replica's final value in one tag of that batch
    assert len(batches) == 1 and len(batches[0]) == 6
    run = runs_by_trial(store)["a"]
    assert run.info.status == "FINISHED"
    assert set(run.data.metrics) == {"test_mse", "train_mse"}
    assert cv.parse_replicas_tag(run.data.tags[cv.REPLICAS]) == {"test_mse/r0": 0.4}
    assert run.data.tags[cv.SEED] == "3" and run.data.params["sigma_inv"] == "0.5"
    assert steps(store, run.info.run_id) == [1, 2, 3]


def test_each_run_carries_its_cell_and_the_seeds_the_experiment_derives(store):
    tracker = new_tracker(store)
    trials = [
        FakeTrial("a", {"width": 8, "sigma_inv": 0.5, "seed": 3, "replicas": 3}),
        FakeTrial("b", {"width": 16, "seed": [7, 2], "replicas": 2}),  # one seed per replica
        FakeTrial("c", {"width": 16, "replicas": 0}),  # rejected by the Config: the trial fails
    ]
    tracker.on_step_begin(0, trials)
    for trial in trials:
        feed(tracker, trial, result(1, 0.5))
        tracker.on_trial_complete(0, [], trial)
    runs = runs_by_trial(store)
    tags = {tid: r.data.tags for tid, r in runs.items()}
    seen = {tid: (t[cv.CELL], t[cv.SEED], t[cv.SEEDS]) for tid, t in tags.items() if tid != "c"}
    assert seen == {"a": ("width=8", "3", "3,4,5"), "b": ("width=16", "7", "7,2")}
    assert cv.SEEDS not in tags["c"] and tags["c"][cv.CELL] == "width=16"
    assert tags["a"][cv.SPEC_SHA256] == SPEC.sha256 and tags["a"][cv.EXPERIMENT] == "sinusoid"


def test_resume_continues_the_same_run_without_duplicate_steps(store, monkeypatch):
    monkeypatch.setattr(tracking, "FLUSH_EVERY_S", 0.0)  # flush every result, like a slow sweep
    first = new_tracker(store)
    b = FakeTrial("b", {"seed": 0})
    first.on_step_begin(0, [b])
    feed(first, b, result(1, 0.9), result(2, 0.5))
    # the driver dies here; a new driver restores trial b from Ray's state and re-runs it
    second = new_tracker(store)
    second.on_step_begin(0, [b])
    feed(second, b, result(1, 0.9), result(2, 0.5), result(3, 0.4))
    second.on_trial_complete(0, [], b)
    runs = runs_by_trial(store)
    assert list(runs) == ["b"] and runs["b"].info.status == "FINISHED"
    assert steps(store, runs["b"].info.run_id) == [1, 2, 3]


def test_a_trial_restarted_on_another_node_does_not_log_its_buffered_steps_twice(store):
    tracker = new_tracker(store)  # default flush period: steps 1-2 are still in the buffer
    d = FakeTrial("d", {"seed": 0})
    tracker.on_step_begin(0, [d])
    feed(tracker, d, result(1, 0.9), result(2, 0.5))
    # its node dies; Tune restarts the trial from step 0 on another node, same id, same seeds
    time.sleep(0.01)  # later timestamps: MLflow would keep both copies of a step
    feed(tracker, d, result(1, 0.9), result(2, 0.5), result(3, 0.4))
    tracker.on_trial_complete(0, [], d)
    assert steps(store, runs_by_trial(store)["d"].info.run_id) == [1, 2, 3]


def test_lost_trial_is_adopted_by_its_resuggestion_or_killed(store, monkeypatch):
    monkeypatch.setattr(tracking, "FLUSH_EVERY_S", 0.0)
    first = new_tracker(store)
    c, e = FakeTrial("c", {"sigma_inv": 1.25}), FakeTrial("e", {"sigma_inv": 7.0})
    first.on_step_begin(0, [c, e])
    feed(first, c, result(1, 0.9))
    feed(first, e, result(1, 0.8))
    # Ray's saved state knew neither; the restored searcher re-suggests c's config as trial d
    second = new_tracker(store)
    d = FakeTrial("d", {"sigma_inv": 1.25})
    second.on_step_begin(0, [])
    feed(second, d, result(1, 0.9), result(2, 0.3))
    second.on_trial_complete(0, [], d)
    second.on_experiment_end([d])
    runs = runs_by_trial(store)
    assert sorted(runs) == ["d", "e"]  # c's run now belongs to d: one run for the one config
    assert runs["d"].info.status == "FINISHED" and steps(store, runs["d"].info.run_id) == [1, 2]
    assert runs["e"].info.status == "KILLED" and "lost" in runs["e"].data.tags[cv.FAILURE_REASON]


def test_diverged_and_errored_trials_are_failed_with_reasons(store, tmp_path):
    tracker = new_tracker(store)
    f, g = FakeTrial("f", {"seed": 0}), FakeTrial("g", {"seed": 0})
    tracker.on_step_begin(0, [f, g])
    feed(
        tracker,
        f,
        result(5, float("inf"), diverged=1.0, failure_reason="non-finite loss by step 5"),
    )
    tracker.on_trial_complete(0, [], f)
    (tmp_path / "error.txt").write_text("Traceback ...\nRuntimeError: CUDA out of memory\n")
    g.error_file = str(tmp_path / "error.txt")
    tracker.on_trial_error(0, [], g)
    runs = runs_by_trial(store)
    assert runs["f"].info.status == "FAILED"
    assert runs["f"].data.tags[cv.FAILURE_REASON] == "non-finite loss by step 5"
    assert runs["g"].info.status == "FAILED"
    assert runs["g"].data.tags[cv.FAILURE_REASON] == "RuntimeError: CUDA out of memory"


def test_each_configuration_of_a_pack_is_a_run_of_its_own(store):
    tracker = new_tracker(store)
    pack = FakeTrial("p", {"width": 8, cv.PACK: [{"sigma_inv": s} for s in (0.5, 1.0, 2.0)]})
    tracker.on_step_begin(0, [pack])
    first = result(1, 0.9)
    first[cv.MEMBERS].update(
        {"1": {"test_mse": 0.7, cv.STATUS: "stopped"},
         "2": {"test_mse": float("inf"), "diverged": 1.0, "failure_reason": "non-finite loss",
               cv.STATUS: "failed"}}
    )  # fmt: skip
    feed(tracker, pack, first, result(2, 0.5))
    tracker.on_trial_complete(0, [], pack)
    runs = runs_by_trial(store)
    assert sorted(runs) == ["p#0", "p#1", "p#2"]
    assert {r.data.tags[cv.PACK_ID] for r in runs.values()} == {"p"}
    assert [runs[k].data.params["sigma_inv"] for k in sorted(runs)] == ["0.5", "1.0", "2.0"]
    assert runs["p#0"].info.status == "FINISHED" and steps(store, runs["p#0"].info.run_id) == [1, 2]
    assert runs["p#1"].info.status == "FINISHED" and runs["p#1"].data.tags[cv.STOPPED_EARLY]
    assert runs["p#2"].info.status == "FAILED"
    assert runs["p#2"].data.tags[cv.FAILURE_REASON] == "non-finite loss"
    # Ray re-runs the pack after the driver died: the configurations that ended stay as they were
    again = new_tracker(store)
    again.on_step_begin(0, [pack])
    feed(again, pack, first, result(2, 0.5), result(3, 0.4))
    again.on_trial_complete(0, [], pack)
    runs = runs_by_trial(store)
    assert sorted(runs) == ["p#0", "p#1", "p#2"]
    assert steps(store, runs["p#1"].info.run_id) == [1] and runs["p#2"].info.status == "FAILED"


def test_unfinished_trials_are_killed_when_the_sweep_ends(store):
    tracker = new_tracker(store)
    h = FakeTrial("h", {"seed": 0})
    tracker.on_step_begin(0, [h])
    feed(tracker, h, result(1, 0.5))
    tracker.on_experiment_end([h])
    run = runs_by_trial(store)["h"]
    assert run.info.status == "KILLED" and steps(store, run.info.run_id) == [1]


def test_artifacts_sit_beside_a_sqlite_store(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    assert tracking.local_artifact_root(uri) == (tmp_path / "mlartifacts").as_uri()
    assert tracking.local_artifact_root("http://127.0.0.1:5000") is None


def test_plot_data_is_logged_as_json_and_kept_out_of_tune_state(store):
    from trainables import artifacts

    tracker = new_tracker(store)
    k = FakeTrial("k", {"seed": 0})
    tracker.on_step_begin(0, [k])
    payload = {"fit": artifacts.curves({"a": ([0, 1], [1, 0])})}
    final = result(1, 0.5, artifacts=payload)
    feed(tracker, k, final)
    tracker.on_trial_complete(0, [], k)
    assert "artifacts" not in final[cv.MEMBERS]["0"]  # popped before Tune stores the result
    run = runs_by_trial(store)["k"]
    names = {a.path for a in MlflowClient(store).list_artifacts(run.info.run_id)}
    assert names == {"fit.json"}  # PNGs: for the best at the end, or on demand
    assert run.info.status == "FINISHED"


# --- the outbox: writes survive a tracking-server outage, in order --------------------------------


class _Server:
    """A stand-in for the server's availability: our outbox logic is tested, not MLflow."""

    def __init__(self) -> None:
        self.up = True
        self.received: list[int] = []

    def write(self, item: int) -> None:
        if not self.up:
            raise ConnectionRefusedError(111, "Connection refused")
        self.received.append(item)


def test_outbox_holds_writes_while_the_server_is_down_and_sends_them_in_order(monkeypatch):
    from service.tracking import Outbox

    monkeypatch.setattr(Outbox, "RETRY_EVERY_S", 0.05)
    server, box = _Server(), Outbox("http://x", patience_s=60)
    box.put(lambda: server.write(0), "w")
    server.up = False
    for i in range(1, 5):
        box.put(lambda i=i: server.write(i), "w")
    assert server.received == [0] and len(box.pending) == 4 and box.down_since is not None
    server.up = True
    box.put(lambda: server.write(5), "w")  # too soon after the last try: still queued
    assert server.received == [0]
    box.drain(block=True)
    assert server.received == [0, 1, 2, 3, 4, 5] and not box.pending and box.down_since is None


def test_outbox_gives_up_after_its_patience_with_a_one_line_error(monkeypatch):
    from service.errors import TrackingError
    from service.tracking import Outbox

    monkeypatch.setattr(Outbox, "RETRY_EVERY_S", 0.01)
    server, box = _Server(), Outbox("http://127.0.0.1:9", patience_s=0.05)
    server.up = False
    box.put(lambda: server.write(1), "w")
    with pytest.raises(TrackingError, match=r"cannot reach the MLflow tracking server at http://"):
        box.drain(block=True)
    assert len(box.pending) == 1  # what was not sent is still there, not dropped


def test_outbox_does_not_wait_on_errors_that_are_not_an_outage():
    from service.errors import TrackingError
    from service.tracking import Outbox

    box = Outbox("sqlite:///x.db", patience_s=60)

    def bad() -> None:
        raise ValueError("INVALID_PARAMETER_VALUE: metric name too long")

    with pytest.raises(TrackingError, match="failed to log: INVALID_PARAMETER_VALUE"):
        box.put(bad, "log")


def test_the_tracker_pickles_as_tune_needs_it_to(store):
    """Tune pickles its callbacks when the Tuner is built: no engine or session may ride along."""
    from ray import cloudpickle

    tracker = new_tracker(store)
    copy = cloudpickle.loads(cloudpickle.dumps(tracker))
    assert type(copy.writer) is type(tracker.writer) and copy.writer.uri == store
