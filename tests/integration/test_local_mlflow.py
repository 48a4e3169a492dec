"""deploy/local/mlflow-server.sh: MLflow on PostgreSQL 15 on loopback, through outage, restart."""

from __future__ import annotations

import os
import socket
import time

import psycopg2
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tests.integration.local_deploy import LocalMlflow, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def fail_fast(monkeypatch):
    """An MLflow client that reports an unreachable server at once, not after minutes of retries."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def rows(pg_port: int, sql: str, *params) -> list[tuple]:
    conn = psycopg2.connect(host="127.0.0.1", port=pg_port, user="postgres", dbname="mlflow")
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def assert_run_is_there(mlf: LocalMlflow, run_id: str) -> None:
    client = MlflowClient(mlf.uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "local-pg"
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (0, 0.9), (1, 0.5), (2, 0.25),
    ]  # fmt: skip


def test_postgres_backed_server_on_loopback_survives_outage_and_restart(fail_fast):
    mlf = LocalMlflow()
    try:
        t0 = time.monotonic()
        mlf.start()
        first_start, first_timings = time.monotonic() - t0, mlf.timings
        assert mlf.backend_uri == f"postgresql+psycopg2://postgres@127.0.0.1:{mlf.pg_port}/mlflow"

        client = MlflowClient(mlf.uri)
        exp_id = client.create_experiment("local-pg")
        run_id = client.create_run(exp_id, run_name="r0").info.run_id
        for step, value in enumerate([0.9, 0.5, 0.25]):
            client.log_metric(run_id, "loss", value, step=step)
        client.set_terminated(run_id)

        # The tracking store really is PostgreSQL: the server's rows are in its `mlflow` database.
        assert rows(
            mlf.pg_port,
            "SELECT e.name, r.status FROM runs r JOIN experiments e USING (experiment_id)"
            " WHERE r.run_uuid = %s",
            run_id,
        ) == [("local-pg", "FINISHED")]
        assert rows(
            mlf.pg_port, "SELECT value FROM metrics WHERE run_uuid = %s ORDER BY step", run_id
        ) == [(0.9,), (0.5,), (0.25,)]

        # Everything this deployment listens on is on 127.0.0.1: the MLflow port and PostgreSQL's.
        assert mlf.listeners() == {("127.0.0.1", mlf.port), ("127.0.0.1", mlf.pg_port)}

        # A tracking-server outage: the client fails at once, PostgreSQL keeps running.
        mlf.stop_server()
        assert refused(mlf.port)
        t = time.monotonic()
        with pytest.raises(MlflowException, match="Connection refused"):
            client.get_run(run_id)
        assert time.monotonic() - t < 5
        assert rows(mlf.pg_port, "SELECT count(*) FROM runs") == [(1,)]

        # `start` again: same port, same data.
        t = time.monotonic()
        mlf.start()
        restart = time.monotonic() - t
        assert_run_is_there(mlf, run_id)

        # `stop`: no process and no listener is left; a later `start` finds the data again.
        pg_port = mlf.pg_port
        mlf.stop(remove=False)
        assert mlf.processes() == {}
        assert refused(mlf.port) and refused(pg_port)
        t = time.monotonic()
        mlf.start()
        cold_restart = time.monotonic() - t
        assert mlf.pg_port == pg_port  # chosen once, saved in DIR
        assert_run_is_there(mlf, run_id)
        print(
            f"\nfirst start (initdb, schema) {first_start:.1f} s {first_timings};"
            f" MLflow restart {restart:.1f} s; PostgreSQL + MLflow restart {cold_restart:.1f} s"
            f" {mlf.timings}"
        )
    finally:
        root = mlf.root
        mlf.stop()
    assert mlf.processes() == {}
    assert not root.exists()
    assert refused(mlf.port) and refused(pg_port)


def test_start_refuses_a_port_that_is_taken():
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        mlf = LocalMlflow(port=other.getsockname()[1])
        try:
            t = time.monotonic()
            with pytest.raises(
                RuntimeError, match=r"port \d+ \(MLflow\) is taken by another process"
            ):
                mlf.start()
            assert time.monotonic() - t < 5
            assert mlf.processes() == {}  # it gave up before PostgreSQL
        finally:
            mlf.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_start_as_root_needs_a_dir_the_postgres_user_can_reach(tmp_path):
    # pytest's tmp_path is under /tmp/pytest-of-root, mode 0700: postgres cannot get in.
    mlf = LocalMlflow(tmp_path / "m", port=free_port())
    with pytest.raises(RuntimeError, match="the postgres user cannot reach"):
        mlf.start()
    mlf.stop()
    assert mlf.processes() == {}
