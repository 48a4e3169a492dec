"""The local deployments of deploy/local/, driven through their scripts (the tests keep them true).

with LocalMlflow() as mlf:          # PostgreSQL 15 + `mlflow server`, both on 127.0.0.1
    MlflowClient(mlf.uri) ...
    mlf.stop_server()               # an outage of the tracking server; PostgreSQL stays
    mlf.start()                     # back on the same port, with the same data
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
MLFLOW_SERVER_SH = ROOT / "deploy" / "local" / "mlflow-server.sh"
FREE_PORTS_PY = ROOT / "deploy" / "local" / "free_ports.py"
_spec = importlib.util.spec_from_file_location("free_ports", FREE_PORTS_PY)
_FREE_PORTS = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_FREE_PORTS)


def free_ports(n: int) -> list[int]:
    """n distinct free ports, chosen as the deploy/local scripts choose theirs."""
    return _FREE_PORTS.free_ports(n, set())


def free_port() -> int:
    return free_ports(1)[0]


def _script_env() -> dict[str, str]:
    """The environment for the scripts: this interpreter's venv first on PATH (mlflow, python3)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PGPORT", None)
    return env


def _process_tree() -> dict[int, tuple[int, str]]:
    ps = ["ps", "-ww", "-eo", "pid=,ppid=,args="]  # -ww: whole command lines, whatever the tty
    out = subprocess.run(ps, capture_output=True, text=True).stdout
    procs = {}
    for line in out.splitlines():
        pid, ppid, *args = line.split(None, 2)
        procs[int(pid)] = (int(ppid), args[0] if args else "")
    return procs


def processes_naming(path: Path) -> dict[int, str]:
    """Processes whose command line names `path`, and all their descendants: pid -> command line."""
    procs = _process_tree()
    hits = {pid for pid, (_, args) in procs.items() if f"{path}/" in args}
    found = {}
    for pid in procs:
        q = pid
        while q in procs and q > 1:
            if q in hits:
                found[pid] = procs[pid][1]
                break
            q = procs[q][0]
    found.pop(os.getpid(), None)
    return found


def _listening_inodes() -> dict[int, tuple[str, int]]:
    """Every listening TCP socket of this network namespace: inode -> (address, port)."""
    sockets = {}
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            hex_ip, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_ip)  # 32-bit words in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            sockets[int(fields[9])] = (socket.inet_ntop(family, raw), int(hex_port, 16))
    return sockets


def listeners_of(pids) -> set[tuple[str, int]]:
    """The (address, port) pairs these processes listen on."""
    inodes = _listening_inodes()
    found = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except (FileNotFoundError, PermissionError):
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            m = re.fullmatch(r"socket:\[(\d+)\]", target)
            if m and int(m.group(1)) in inodes:
                found.add(inodes[int(m.group(1))])
    return found


class LocalMlflow:
    """deploy/local/mlflow-server.sh: an MLflow tracking server on PostgreSQL 15, on loopback.

    `root` is the script's DIR. Without one, a short directory under /tmp is made (mode 0755, so
    that the postgres user can reach it when we are root) and removed again by `stop()`.
    """

    def __init__(self, root: Path | None = None, port: int | None = None) -> None:
        self._own_root = root is None
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="ssm", dir="/tmp"))
            root.chmod(0o755)
        self.root = Path(root)
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.backend_uri: str | None = None
        self.timings: dict[str, float] = {}  # the script's own: "postgresql" and "mlflow", seconds

    @property
    def pg_port(self) -> int:
        assert self.backend_uri, "start() first"
        return urlsplit(self.backend_uri).port

    def _script(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            ["bash", str(MLFLOW_SERVER_SH), *args],
            env=_script_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"mlflow-server.sh {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
            )
        return proc

    def start(self) -> LocalMlflow:
        """Start PostgreSQL (if it is not running) and the MLflow server; wait for /health."""
        proc = self._script("start", str(self.root), str(self.port))
        lines = proc.stdout.strip().splitlines()
        if lines[-1] != self.uri:
            raise RuntimeError(f"mlflow-server.sh start printed {proc.stdout!r}, not {self.uri}")
        self.backend_uri = next(x.split(" ", 1)[1] for x in lines if x.startswith("backend: "))
        self.timings = {
            m.group(1).lower(): float(m.group(2))
            for m in re.finditer(r"(PostgreSQL|MLflow) on \S+ ready in ([\d.]+) s", proc.stderr)
        }
        return self

    def stop_server(self) -> None:
        """Stop the MLflow server only (a tracking-server outage); PostgreSQL keeps the data."""
        self._script("stop-mlflow", str(self.root))

    def stop(self, remove: bool = True) -> None:
        """Stop MLflow and PostgreSQL. With `remove`, also delete the directory this object made."""
        if self.root.exists():
            self._script("stop", str(self.root))
        if remove and self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def processes(self) -> dict[int, str]:
        """This deployment's processes (the MLflow server, its uvicorn, the postmaster and its
        backends): pid -> command line."""
        return processes_naming(self.root)

    def listeners(self) -> set[tuple[str, int]]:
        """Where this deployment's processes listen: {(address, port)}."""
        return listeners_of(self.processes())

    def log_tail(self, lines: int = 30) -> str:
        log = self.root / "mlflow.log"
        return "\n".join(log.read_text().splitlines()[-lines:]) if log.exists() else ""

    def __enter__(self) -> LocalMlflow:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_until(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
