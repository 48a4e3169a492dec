"""deploy/local/free_ports.py: the ports the local scripts give Ray's and PostgreSQL's components.

Ray refuses to start a node whose components share a port, and asking the kernel for one free
port at a time can return the same port twice (CI once gave metrics_export and runtime_env_agent
the same one); ray-cluster.sh also keeps the nodes it adds later off earlier nodes' ports.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.integration.local_deploy import FREE_PORTS_PY


def _free_ports(n: int, *args: str) -> list[int]:
    cmd = [sys.executable, str(FREE_PORTS_PY), str(n), *args]
    return [
        int(p)
        for p in subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    ]


def test_ports_are_distinct_and_a_record_never_hands_one_out_twice(tmp_path: Path):
    record = tmp_path / "used-ports"
    first = _free_ports(40, "--record", str(record))
    second = _free_ports(40, "--record", str(record))
    assert len(first) == 40 and len(set(first + second)) == 80
    assert sorted(map(int, record.read_text().split())) == sorted(first + second)


def test_ports_skip_those_recorded_and_those_named_not(tmp_path: Path):
    probe = _free_ports(18)
    # The kernel's next picks are likely among ports it just handed out: record 15 of them as used
    # and name the other three with --not; none of them may come back.
    record = tmp_path / "used-ports"
    record.write_text("".join(f"{p}\n" for p in probe[:15]))
    got = _free_ports(200, "--record", str(record), "--not", *map(str, probe[15:]))
    assert len(set(got)) == 200
    assert not set(got) & set(probe)
