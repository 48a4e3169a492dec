"""deploy/local/ray-cluster.sh hands each node ports no other part of the cluster holds.

Ray refuses to start a node whose components share a port, and asking the kernel for one free
port at a time can return the same port twice (CI once gave metrics_export and runtime_env_agent
the same one), so the script's `free_ports` is checked on its own here.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.integration.helpers import ROOT

SCRIPT = ROOT / "deploy" / "local" / "ray-cluster.sh"


def _free_ports(tmp_path: Path, n: int, fixed: tuple[int, int, int]) -> list[int]:
    """Run the script's own free_ports function, cut out of the script, as the script runs it."""
    body = re.search(r"^free_ports\(\) \{.*?^\}$", SCRIPT.read_text(), re.S | re.M)
    assert body, "free_ports() is gone from ray-cluster.sh"
    gcs, dashboard, client = fixed
    script = (f"set -euo pipefail\ndir={tmp_path}\nRAY_PORT={gcs} RAY_DASHBOARD_PORT={dashboard} "
              f"RAY_CLIENT_PORT={client}\n{body.group(0)}\nfree_ports {n}\n")  # fmt: skip
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return [int(p) for p in out.stdout.split()]


def test_ports_are_distinct_and_never_handed_out_twice(tmp_path: Path):
    first = _free_ports(tmp_path, 40, (1, 2, 3))
    second = _free_ports(tmp_path, 40, (1, 2, 3))
    assert len(first) == 40 and len(set(first + second)) == 80
    assert sorted((tmp_path / "used-ports").read_text().split(), key=int) == sorted(
        map(str, first + second), key=int
    )


def test_ports_skip_those_already_used_and_the_fixed_ones(tmp_path: Path):
    (tmp_path / "probe").mkdir()
    probe = _free_ports(tmp_path / "probe", 18, (1, 2, 3))
    # The kernel's next picks are likely among ports it just handed out: mark 15 of them as used
    # and make the other three the cluster's fixed ports; none of them may come back.
    used, fixed = probe[:15], (probe[15], probe[16], probe[17])
    (tmp_path / "used-ports").write_text("".join(f"{p}\n" for p in used))
    got = _free_ports(tmp_path, 200, fixed)
    assert len(set(got)) == 200
    assert not set(got) & set(probe)
