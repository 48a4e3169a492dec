"""Packed trials: the same sweep through the real service, one configuration per trial vs packs.

What it measures: for each width (16, 64, 1000) one sinusoid sweep of 96 configurations (σ⁻¹ and
lr searched by the same seeded sampler, R = 4 seeds each, 100 training points, a fixed number of
full-batch steps; one cell, 2 trials at a time, 1 CPU each) run twice through `run_sweep` on one
local Ray, each into its own fresh SQLite MLflow store: unpacked (`pack: 1`, today's one
configuration per Tune trial) and packed (`pack: auto`). Every configuration must land in MLflow
once, finished, with its test_mse (asserted), so that neither side wins by doing less.

Targets on 2 CPU cores: packed >= 10x faster at widths 16 and 64, >= 1.5x at width 1000.

Run (about 5 minutes on 2 CPU cores):

    .venv/bin/python benchmarks/packing.py
    .venv/bin/python benchmarks/packing.py --widths 64 --configs 24      # a quick look

The last line is the headline: `packing_speedup_w64: X.Xx` (unpacked wall time / packed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too

TARGETS = {16: 10.0, 64: 10.0, 1000: 1.5}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=int, nargs="+", default=[16, 64, 1000])
    p.add_argument("--configs", type=int, default=96, help="configurations per sweep (one cell)")
    p.add_argument("--replicas", type=int, default=4, help="seeds per configuration")
    p.add_argument("--steps", type=int, default=300, help="full-batch steps per configuration")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--gpu-share", type=float, default=0.25, help="resources.gpu with --device cuda")
    return p.parse_args(argv)


def spec_dict(args: argparse.Namespace, width: int, pack: int | str) -> dict[str, Any]:
    return {
        "name": f"w{width}-{pack}",
        "experiment": "sinusoid",
        "objective": {"metric": "test_mse", "mode": "min"},
        "fixed": {"replicas": args.replicas, "steps": args.steps, "eval_every": args.eval_every,
                  "train_points": 100, "test_points": 500, "ood_points": 500, "width": width},
        "search": {"sigma_inv": {"low": 0.05, "high": 20.0, "log": True},
                   "lr": {"low": 1e-3, "high": 1e-2, "log": True}},
        "trials_per_cell": args.configs,
        "max_concurrent": args.max_concurrent,
        "sampler": "tpe",
        "sampler_seed": 0,
        "resources": {"cpu": 1, "gpu": args.gpu_share if args.device == "cuda" else 0},
        "pack": pack,
    }  # fmt: skip


def fresh_store(path: Path) -> str:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{path}"
    MlflowClient(uri).search_experiments(max_results=1)  # the schema migration is nobody's cost
    return uri


def check_logged(uri: str, sweep: str, expected: int) -> None:
    from service import analysis

    trials = analysis.load_trials(sweep, uri)
    assert len(trials) == expected, f"{sweep}: {len(trials)} configurations, not {expected}"
    assert set(trials["status"]) == {"FINISHED"}, f"{sweep}: {trials['status'].value_counts()}"
    assert trials["test_mse"].notna().all(), f"{sweep}: a configuration has no test_mse"


def sweep(args: argparse.Namespace, width: int, pack: int | str, root: Path) -> tuple[float, int]:
    from service.packing import pack_sizes
    from service.spec import load_spec
    from service.sweep import run_sweep

    spec = load_spec(spec_dict(args, width, pack))
    uri = fresh_store(root / f"{spec.name}.db")
    start = time.perf_counter()
    result = run_sweep(spec, name=spec.name, tracking_uri=uri, storage=root, progress=False)
    wall = time.perf_counter() - start
    assert result.num_errors == 0, f"{spec.name}: {result.num_errors} failed configuration(s)"
    check_logged(uri, spec.name, args.configs)
    return wall, pack_sizes(spec)[0]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="packing-"))
    ray_tmp = None
    if "RAY_TMPDIR" not in os.environ:  # Ray's unix sockets want a short path
        ray_tmp = tempfile.mkdtemp(prefix="ssp", dir="/tmp")
        os.environ["RAY_TMPDIR"] = ray_tmp
    import ray

    from service.session import start_ray

    start_ray()
    rows = []
    try:
        for width in args.widths:
            print(f"width {width}: unpacked ...", flush=True)
            unpacked, _ = sweep(args, width, 1, root)
            print(f"width {width}: packed ...", flush=True)
            packed, k = sweep(args, width, "auto", root)
            rows.append((width, unpacked, packed, k))
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
        if ray_tmp is not None:
            shutil.rmtree(ray_tmp, ignore_errors=True)
    print()
    print(f"{args.configs} configurations x {args.replicas} seeds of sinusoid, {args.steps} steps, "
          f"100 points, {args.max_concurrent} trials at a time, device {args.device}")  # fmt: skip
    print(f"{'width':>6}{'pack':>6}{'unpacked s':>12}{'packed s':>10}{'speedup':>10}  target")
    for width, unpacked, packed, k in rows:
        target = TARGETS.get(width, 1.0) if args.device == "cpu" else 50.0
        verdict = "met" if unpacked / packed >= target else "MISSED"
        print(f"{width:>6}{k:>6}{unpacked:>12.1f}{packed:>10.1f}{unpacked / packed:>9.2f}x"
              f"  >= {target:g}x ({verdict})")  # fmt: skip
    print("MLflow: every configuration landed once, FINISHED, with its test_mse (checked)")
    for width, unpacked, packed, _ in sorted(rows, key=lambda r: r[0] == 64):  # headline last
        print(f"packing_speedup_w{width}: {unpacked / packed:.1f}x")


if __name__ == "__main__":
    main()
