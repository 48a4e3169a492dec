"""Print N distinct free TCP ports on 127.0.0.1, for the scripts beside this file.

usage: free_ports.py N [--record FILE] [--not PORT ...]

Asking the kernel for one port at a time can return the same port twice (it is free again the
moment the probe closes), and Ray refuses to start a node two of whose components share a port;
so every probe stays open until all N are chosen. `--not` names ports already promised elsewhere
but maybe not listening yet; `--record` is a file of ports handed out before (never again) that the
new ones are appended to, so the nodes a cluster adds later get ports of their own too.
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path


def free_ports(n: int, avoid: set[int]) -> list[int]:
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            probe = socket.socket()
            held.append(probe)
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            if port not in avoid:
                ports.append(port)
        return ports
    finally:
        for probe in held:
            probe.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int)
    parser.add_argument("--record", type=Path)
    parser.add_argument("--not", dest="avoid", type=int, nargs="*", default=[])
    args = parser.parse_args()
    avoid = set(args.avoid)
    if args.record is not None and args.record.exists():
        avoid |= {int(p) for p in args.record.read_text().split()}
    ports = free_ports(args.n, avoid)
    if args.record is not None:
        with args.record.open("a") as f:
            f.write("".join(f"{p}\n" for p in ports))
    print(*ports)


if __name__ == "__main__":
    main()
