"""Every private Ray API the service relies on, in one place: each says why, and on which Ray.

Ray 2.60.0 offers no public way to do these four things; each shim below says what it reaches
into and why we need it. `tests/service/test_ray_shims.py` fails, naming the shim, when an upgrade
of Ray removes one, so that a Ray upgrade is a reading of this module, not a hunt through the
service. (`deploy/local/loopback/sitecustomize.py` patches `resolve_ip_for_localhost` the same way
in the local cluster's own processes; it has to stand alone, so it cannot import this module.)

Nothing here imports Ray at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

CHECKED_ON = "2.60.0"  # the Ray version every shim below was read against


def keep_localhost_as_given() -> None:
    """`ray._private.services.resolve_ip_for_localhost` (checked on Ray 2.60.0).

    Ray "resolves" 127.0.0.1, localhost and ::1 to the host's outward address wherever a process
    names one (`ray.init(address="127.0.0.1:PORT")`, `_node_ip_address`), which is meant for
    clusters spanning hosts: on one host it makes a local Ray listen on the network and a driver
    dial an address nothing listens on. No setting switches it off; we replace that one function,
    in this process only, by the identity (keeping Ray's check for an empty host).
    """
    import ray._private.services as services

    def as_given(host: str) -> str:
        if not host:
            raise ValueError(f"Malformed host: {host}")
        return host

    services.resolve_ip_for_localhost = as_given


def loopback_node() -> dict[str, Any]:
    """`ray.init(_node_ip_address=...)` (checked on Ray 2.60.0): a local Ray on 127.0.0.1 only.

    `ray.init` takes the node's IP only as this underscored argument (`ray start` has the public
    `--node-ip-address`); without it the embedded default binds its servers to the host's address.
    Returned as keyword arguments for `ray.init`.
    """
    return {"_node_ip_address": "127.0.0.1"}


def gcs_client(address: str) -> Any:
    """`ray._raylet.GcsClient` (checked on Ray 2.60.0): one GCS call before `ray.init`.

    Constructing a client makes one authenticated call to the head's GCS: a wrong or missing token
    is refused within a second, where `ray.init` retries for about 20 s before it says why. Ray's
    public clients (Jobs, state API) talk to the dashboard, not to the GCS address `run` is given.
    """
    from ray._raylet import GcsClient

    return GcsClient(address=address)


def replace_callbacks(tuner: Any, callbacks: list[Any]) -> None:
    """`Tuner._local_tuner._run_config.callbacks` (checked on Ray 2.60.0).

    `Tuner.restore` takes no `RunConfig`: it unpickles the one saved at the start, whose callbacks
    are the first driver's copies (our tracker's state, its client and the runs it knew are stale
    after a restart). Fresh callbacks, which find the existing MLflow runs, are swapped in here.
    Only for a Tuner in this process: under Ray Client (`ray://`) the Tuner lives on the head.
    """
    local = tuner._local_tuner
    if local is None:
        raise RuntimeError("a restored Tuner's callbacks can only be replaced outside Ray Client")
    local._run_config.callbacks = callbacks


PRIVATE_APIS: dict[str, Callable[..., Any]] = {
    "ray._private.services.resolve_ip_for_localhost": keep_localhost_as_given,
    "ray.init(_node_ip_address=...)": loopback_node,
    "ray._raylet.GcsClient": gcs_client,
    "Tuner._local_tuner._run_config": replace_callbacks,
}
"""Each private API and the shim that uses it (tests/service/test_ray_shims.py checks each one)."""
