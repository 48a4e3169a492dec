"""Keeps a one-host Ray cluster on 127.0.0.1. deploy/local/ray-cluster.sh puts this folder on the
PYTHONPATH of every node it starts; Python imports this module at start-up in each of them.

Ray "resolves" 127.0.0.1 to the host's outward address wherever a process names it (`ray start
--node-ip-address 127.0.0.1`, `ray.init(address="127.0.0.1:PORT")`): right for a cluster spanning
hosts, but it makes a one-host cluster listen on the network. Ray's own processes (dashboard,
agents, workers, job drivers) inherit the PYTHONPATH, so switching that one resolution off here
reaches all of them; a process that missed it would dial an address nothing listens on, so it must
reach all of them. `service.session.keep_loopback` does the same for the embedded default. (Being
first on the path, it stands in for any other sitecustomize in these processes.)
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

_TARGET = "ray._private.services"


def _identity(host: str) -> str:
    if not host:
        raise ValueError(f"Malformed host: {host}")
    return host


class _KeepLoopback(importlib.abc.MetaPathFinder):
    """Patches the module the moment it is first imported: no Ray import at start-up."""

    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            module.resolve_ip_for_localhost = _identity

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _KeepLoopback())
