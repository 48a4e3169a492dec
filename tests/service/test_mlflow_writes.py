"""One transaction per hook writes what MLflow's own calls write: both paths read back the same."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from service import mlflow_writes
from service.mlflow_writes import ClientWrites, RunWrite, SqlWrites, writer_for


@dataclass
class Target:
    run_id: str | None = None
    artifact_uri: str | None = None


def stores(tmp_path):
    """A SQL writer and a client writer, each on its own fresh SQLite store."""
    out = {}
    for kind in ("sql", "client"):
        uri = f"sqlite:///{tmp_path}/{kind}.db"
        client = MlflowClient(uri)
        exp = client.create_experiment("x", artifact_location=(tmp_path / kind).as_uri())
        writer = writer_for(client, exp, uri)
        if kind == "client":
            writer = ClientWrites(client, exp, uri)
        out[kind] = (client, writer)
    assert isinstance(out["sql"][1], SqlWrites)
    return out


def send(writer, writes):
    writer.queue(writes, lambda fn, what: fn())


def first_writes(ts: int) -> list[RunWrite]:
    metrics = [Metric("loss", 1.0 / (s + 1), ts + s, s) for s in range(950)]  # > one client batch
    metrics += [Metric("loss", 1.0 / 950, ts + 949, 949)]  # a repeat: stored once
    metrics += [Metric("nan", math.nan, ts, 0), Metric("big", math.inf, ts, 0)]
    return [
        RunWrite(
            Target(),
            create=("alpha", {"role": "trial", "mlflow.user": "ada"}),
            params=[Param(f"p{i:03d}", str(i)) for i in range(120)],  # > one client batch
            metrics=metrics,
            tags={"note": "first"},
            step_tag="logged_step",
            artifacts={"curve": {"x": [1, 2], "y": [0.5, 0.25]}},
            start_ms=ts,
        ),
        RunWrite(Target(), create=("beta", {"role": "trial"}), end="FAILED", start_ms=ts),
    ]


def nan_safe(value: float) -> float | str:
    return "nan" if math.isnan(value) else value  # NaN != NaN would fail the comparison


def read(client, run_id):
    run = client.get_run(run_id)
    history = {
        k: [(m.step, m.timestamp, nan_safe(m.value)) for m in client.get_metric_history(run_id, k)]
        for k in run.data.metrics
    }
    artifacts = sorted(a.path for a in client.list_artifacts(run_id))
    return {
        "name": run.info.run_name,
        "status": run.info.status,
        "user": run.info.user_id,
        "start": run.info.start_time,
        "ended": run.info.end_time is not None,
        "tags": run.data.tags,
        "params": run.data.params,
        "latest": {k: nan_safe(v) for k, v in run.data.metrics.items()},
        "history": {k: sorted(v) for k, v in history.items()},
        "artifacts": artifacts,
    }


def test_one_transaction_writes_what_the_client_calls_write(tmp_path):
    ts = int(time.time() * 1000)
    seen = {}
    for kind, (client, writer) in stores(tmp_path).items():
        writes = first_writes(ts)
        send(writer, writes)
        alpha, beta = (w.run for w in writes)
        # a later hook: more metrics (one older than the latest), a tag, the end
        send(writer, [RunWrite(alpha, metrics=[Metric("loss", 0.5, ts - 5, 10),
                                               Metric("loss", 1e-4, ts + 2000, 2000)],
                               tags={"note": "second"}, step_tag="logged_step",
                               end="FINISHED")])  # fmt: skip
        seen[kind] = (read(client, alpha.run_id), read(client, beta.run_id))
        ours = client.download_artifacts(alpha.run_id, "curve.json", str(tmp_path / kind))
        client.log_dict(beta.run_id, writes[0].artifacts["curve"], "curve.json")  # MLflow's own
        theirs = client.download_artifacts(beta.run_id, "curve.json", str(tmp_path / "ref"))
        assert json.loads(open(ours).read()) == json.loads(open(theirs).read())
    assert seen["sql"] == seen["client"]
    alpha, beta = seen["sql"]
    assert alpha["status"] == "FINISHED" and alpha["ended"] and alpha["user"] == "ada"
    assert alpha["tags"]["logged_step"] == "2000" and alpha["tags"]["note"] == "second"
    assert alpha["tags"]["mlflow.runName"] == "alpha" and len(alpha["params"]) == 120
    assert alpha["latest"]["loss"] == 1e-4 and len(alpha["history"]["loss"]) == 952
    assert alpha["latest"]["nan"] == "nan" and alpha["latest"]["big"] == 1.7976931348623157e308
    assert alpha["artifacts"] == ["curve.json"]
    assert beta["status"] == "FAILED" and beta["latest"] == {} and beta["ended"]


def test_a_retried_transaction_never_makes_a_second_run(tmp_path, monkeypatch):
    client, writer = stores(tmp_path)["sql"]
    real, calls = mlflow_writes._metric_rows, []

    def flaky(*args):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database is locked")
        return real(*args)

    monkeypatch.setattr(mlflow_writes, "_metric_rows", flaky)
    writes = [RunWrite(Target(), create=("a", {}), metrics=[Metric("m", 1.0, 0, 1)])]
    queued = []
    writer.queue(writes, lambda fn, what: queued.append(fn))
    with pytest.raises(Exception, match="database is locked"):
        queued[0]()  # rolled back: nothing of it is stored
    assert client.search_runs([writer.experiment_id]) == []
    queued[0]()  # the retry writes the run, under the id chosen before the first try
    (run,) = client.search_runs([writer.experiment_id])
    assert run.info.run_id == writes[0].run.run_id and run.data.metrics == {"m": 1.0}


def test_writing_to_a_deleted_run_says_which_and_writes_nothing(tmp_path):
    client, writer = stores(tmp_path)["sql"]
    kept, gone = Target(), Target()
    send(writer, [RunWrite(kept, create=("kept", {})), RunWrite(gone, create=("gone", {}))])
    client.delete_run(gone.run_id)
    with pytest.raises(Exception, match=f"run {gone.run_id} is missing or deleted"):
        send(writer, [RunWrite(kept, end="FINISHED"), RunWrite(gone, end="FINISHED")])
    assert client.get_run(kept.run_id).info.status == "RUNNING"


def test_a_param_keeps_its_value_as_mlflow_requires(tmp_path):
    client, writer = stores(tmp_path)["sql"]
    run = Target()
    send(writer, [RunWrite(run, create=("r", {}), params=[Param("lr", "0.1")])])
    send(writer, [RunWrite(run, params=[Param("lr", "0.1"), Param("width", "8")])])  # same: fine
    with pytest.raises(Exception, match="param 'lr' of run .* is '0.1'; cannot log '0.2'"):
        send(writer, [RunWrite(run, params=[Param("lr", "0.2")])])
    assert client.get_run(run.run_id).data.params == {"lr": "0.1", "width": "8"}
