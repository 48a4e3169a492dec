"""The Ray session without starting Ray: Tune settings, capacity, addresses, probes."""

from __future__ import annotations

import os

import pytest

from service import session
from service.errors import ClusterError, SpecError
from service.spec import load_spec


def test_capacity_shortfall_names_the_spec_fields_a_trial_cannot_get():
    base = {
        "name": "t",
        "experiment": "sinusoid",
        "objective": {"metric": "test_mse", "mode": "min"},
    }
    spec = load_spec({**base, "resources": {"cpu": 4, "gpu": 0.5}})
    assert session.capacity_shortfall(spec, {"CPU": 8.0, "GPU": 1.0}) is None
    assert session.capacity_shortfall(spec, {"CPU": 2.0}) == (
        "each trial asks for resources.cpu: 4, resources.gpu: 0.5 "
        "but this Ray has 2 CPU, 0 GPU in all"
    )
    assert session.capacity_shortfall(spec, {"CPU": 4.0, "GPU": 0.25}) == (
        "each trial asks for resources.gpu: 0.5 but this Ray has 0.25 GPU in all"
    )


@pytest.mark.parametrize(
    "address,local",
    [("auto", True), ("127.0.0.1:6379", True), ("localhost:6379", True), ("[::1]:6379", True),
     ("10.0.0.5:6379", False), ("head.example.org:6379", False), ("ray://127.0.0.1:10001", False)],
)  # fmt: skip
def test_names_this_host(address, local):
    assert session.names_this_host(address) is local


def test_probe_address_rejects_malformed_closed_and_dashboard_addresses():
    with pytest.raises(ClusterError, match="must look like HOST:PORT"):
        session.probe_address("localhost")
    with pytest.raises(ClusterError, match="cannot reach the Ray cluster at 127.0.0.1:9"):
        session.probe_address("127.0.0.1:9", timeout=2)
    with pytest.raises(SpecError, match="that is the Ray Jobs .dashboard. address"):
        session.probe_address("http://127.0.0.1:8265")


TUNE_ENV = ("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "TUNE_GLOBAL_CHECKPOINT_S", "RAY_AIR_NEW_OUTPUT")


def test_tune_accepts_results_without_a_final_only_objective(monkeypatch):
    # load_spec checked the objective up front; Tune's per-result check would reject every
    # intermediate result of an objective measured only at the end, so it is off even when the
    # user's environment turns it on.
    for key in TUNE_ENV:
        monkeypatch.setenv(key, "")  # restored after the test, whatever configure_tune sets
        monkeypatch.delenv(key)
    monkeypatch.setenv("TUNE_DISABLE_STRICT_METRIC_CHECKING", "0")
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "30")
    session.configure_tune()
    assert os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] == "1"
    assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "30"  # the others: the user's value wins
    assert os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] == "1"


INIT_FAILURE = (
    "Initialization failure from server:\nTraceback (most recent call last):\n"
    '  File "proxier.py", line 776, in Datapath\n'
    "RuntimeError: Proxy failed to Connect to backend! Check `ray_client_server.err`"
)


def test_a_client_failure_names_the_servers_reason_not_its_preamble():
    assert session.client_failure_reason(ConnectionAbortedError(INIT_FAILURE)) == (
        "RuntimeError: Proxy failed to Connect to backend! Check `ray_client_server.err`"
    )


def test_a_client_server_still_starting_is_waited_for_and_said(monkeypatch, capsys):
    calls = []

    def init(address=None, **kw):
        calls.append(address)
        if len(calls) < 3:
            raise ConnectionAbortedError(INIT_FAILURE)

    monkeypatch.setattr("ray.init", init)
    monkeypatch.setattr(session.time, "sleep", lambda s: None)
    session._connect_client("ray://127.0.0.1:1")
    assert len(calls) == 3
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 2 and "is still starting this client's server" in said[0]


def test_a_client_refused_for_another_reason_fails_at_once_with_it(monkeypatch):
    def init(**kw):
        raise ConnectionAbortedError("Initialization failure from server:\nValueError: bad env")

    monkeypatch.setattr("ray.init", init)
    with pytest.raises(ClusterError, match="refused this client: ValueError: bad env$"):
        session._connect_client("ray://127.0.0.1:1")


def test_waiting_for_a_client_server_is_bounded(monkeypatch):
    def init(**kw):
        raise ConnectionAbortedError(INIT_FAILURE)

    monkeypatch.setattr("ray.init", init)
    monkeypatch.setattr(session.time, "sleep", lambda s: None)
    with pytest.raises(ClusterError, match="Proxy failed to Connect to backend"):
        session._connect_client("ray://127.0.0.1:1", wait_s=0.0)
