"""Ray-free experiment code: every experiment of the seed papers as `run(config, reporter)`.

The registry is an explicit dict: experiment name -> module path. Each module exposes `Config`
(a strict dataclass), `run(config, report, device=None)`, and documents its paper and metrics.
"""

from __future__ import annotations

import importlib
from types import ModuleType

REGISTRY: dict[str, str] = {
    "addition": "trainables.addition",
    "sinusoid": "trainables.sinusoid",
    "gp": "trainables.gp",
    "digits_robustness": "trainables.digits_robustness",
    "energy_landscape": "trainables.energy_landscape",
    "teacher_student": "trainables.teacher_student",
    "bell_polynomial": "trainables.bell_polynomial",
    "spiral": "trainables.spiral",
}


class UnknownExperiment(KeyError):
    def __str__(self) -> str:
        return f"unknown experiment {self.args[0]!r}; known: {sorted(REGISTRY)}"


def load(name: str) -> ModuleType:
    """The experiment's module; imported lazily so listing experiments stays cheap."""
    if name not in REGISTRY:
        raise UnknownExperiment(name)
    return importlib.import_module(REGISTRY[name])
