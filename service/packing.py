"""How many configurations each Tune trial trains: the pack size of every cell.

`pack: K` in a spec packs K configurations of a cell into one trial; `pack: auto` (the default)
sizes packs so that they pay:
- enough packs per cell for `max_concurrent` trials to run at once (a pack never idles a CPU);
- on the CPU, a pack's activations stay within `CPU_ACTIVATIONS` elements, where the stacked
  kernels still run from cache (`benchmarks/packing.py` measured the knee);
- on a GPU, its memory stays within half of its share of the card (`resources.gpu`);
- configurations that cannot share one stacked model (a searched field that is not per-replica,
  an experiment without a stacked task) run in turn in one process: `SEQUENTIAL_PACK` of them,
  which saves the per-trial start-up without holding back Optuna for long.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import trainables
from trainables.packing import replica_cost

if TYPE_CHECKING:
    from service.spec import Spec

CPU_ACTIVATIONS = 2_000_000  # benchmarks/kernels.py: past it, a step costs more per element
MAX_PACK = 256
SEQUENTIAL_PACK = 4
GPU_MEMORY_GIB = float(os.environ.get("SMOOTHSWEEP_GPU_MEMORY_GIB", "80"))  # a card, if unseen


def pack_sizes(spec: Spec) -> list[int]:
    """K for every cell of the spec, in `spec.cells()` order."""
    cells = spec.cells()
    if spec.pack != "auto":
        return [int(spec.pack)] * len(cells)
    packs_per_cell = max(1, math.ceil(spec.max_concurrent / len(cells)))
    most = min(MAX_PACK, math.ceil(spec.trials_per_cell / packs_per_cell))
    config_cls = trainables.load(spec.experiment).Config
    stackable = set(spec.search) <= set(config_cls.per_replica_fields())
    examples = {k: p.example() for k, p in spec.search.items()}
    sizes = []
    for cell in cells:
        config = spec.trial_config(cell, examples)
        cost = replica_cost(spec.experiment, config) if stackable else None
        if cost is None:
            sizes.append(min(most, SEQUENTIAL_PACK))
            continue
        replicas = config_cls.from_mapping(config).replicas
        k = max(1, min(most, _fits(spec, cost) // replicas))
        sizes.append(math.ceil(spec.trials_per_cell / math.ceil(spec.trials_per_cell / k)))
    return sizes  # each balanced: 96 configurations in packs of at most 69 are two of 48


def _fits(spec: Spec, cost: tuple[int, int]) -> int:
    """How many replicas of this cost one trial's device holds at a good speed."""
    activations, static = cost
    if spec.resources.gpu <= 0:
        return max(1, CPU_ACTIVATIONS // max(1, activations))
    # float32; activations kept for backward twice over, parameters with grad and Adam's m and v
    per_replica = 4 * (4 * activations + 4 * static)
    budget = 0.5 * min(spec.resources.gpu, 1.0) * GPU_MEMORY_GIB * 2**30
    return max(1, int(budget // per_replica))


def num_packs(spec: Spec, sizes: list[int]) -> int:
    """Tune trials the sweep makes: each cell's configurations in packs of its size."""
    return sum(math.ceil(spec.trials_per_cell / k) for k in sizes)
