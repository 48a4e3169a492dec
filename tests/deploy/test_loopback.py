"""deploy/local/loopback/sitecustomize.py: a process that has it on PYTHONPATH keeps 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.integration.helpers import ROOT

PROBE = (
    "from ray._private import services as s; "
    "print(s.canonicalize_bootstrap_address('127.0.0.1:6379'), "
    "s.resolve_ip_for_localhost('localhost'), s.resolve_ip_for_localhost('10.1.2.3'))"
)


def _probe(with_hook: bool) -> list[str]:
    paths = [str(ROOT / "deploy" / "local" / "loopback")] if with_hook else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, str(ROOT)])}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_the_hook_keeps_loopback_addresses_and_leaves_others_alone():
    assert _probe(with_hook=True) == ["127.0.0.1:6379", "localhost", "10.1.2.3"]


def test_without_the_hook_ray_resolves_loopback_away_on_a_networked_host():
    address, local, other = _probe(with_hook=False)
    assert other == "10.1.2.3"
    # Ray swaps in the host's outward address (or 127.0.0.1 on a host with no route out): the hook
    # above is what makes the difference wherever the host has a network.
    assert local != "localhost" and address.endswith(":6379")
