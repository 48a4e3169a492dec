"""Replicas as a tensor dimension: R seeds packed into one stacked model vs trained one by one.

What it measures: for each width, the wall time of R = 16 seeds of `trainables.sinusoid.run`
trained one after another (16 calls with replicas=1, seeds 0..15) against one call with
replicas=16 (seeds 0..15 stacked: [R, ...] parameters, batched matmuls, one optimizer step), with
the same fixed number of full-batch steps (default 300, one evaluation at the end) on one torch
thread. Each call includes what a trial pays: config validation, data, model, training, evaluation.
Every packed replica's test_mse must equal its sequential twin's to 1e-5 relative (checked), so the
two sides do the same work.

Targets: packed >= 8x faster at widths 16 and 64 (small nets waste a process per seed); > 1x at
width 1000 (compute-bound, so the gain is the per-step overhead only).

Run (about 2 minutes on 2 CPU cores):

    .venv/bin/python benchmarks/replicas.py
    .venv/bin/python benchmarks/replicas.py --widths 16 64 --steps 100 --repeats 1   # quick
    .venv/bin/python benchmarks/replicas.py --threads 2

The last line is the headline: `replicas_speedup_w64: X.Xx` (sequential / packed at width 64).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too

TARGETS = {16: 8.0, 64: 8.0, 1000: 1.0}  # width -> speed-up (>= for 16 and 64, > for 1000)
HEADLINE_WIDTH = 64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=int, nargs="+", default=[16, 64, 1000], help="hidden units")
    p.add_argument("--replicas", type=int, default=16, help="seeds R (0..R-1)")
    p.add_argument("--steps", type=int, default=300, help="full-batch optimizer steps")
    p.add_argument("--eval-every", type=int, default=None, help="default: --steps (one eval)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--repeats", type=int, default=3, help="timings per side; the fastest counts")
    p.add_argument("--rtol", type=float, default=1e-5, help="packed vs sequential test_mse")
    return p.parse_args(argv)


def config(args: argparse.Namespace, width: int) -> dict[str, Any]:
    return {
        "width": width,
        "steps": args.steps,
        "eval_every": args.eval_every or args.steps,
        "sigma_inv": 1.0,
        "lr": 1e-3,
    }


def sequential(cfg: dict[str, Any], replicas: int) -> tuple[float, list[float]]:
    from trainables import sinusoid

    start = time.perf_counter()
    out = [sinusoid.run({**cfg, "seed": s, "replicas": 1}) for s in range(replicas)]
    return time.perf_counter() - start, [m["test_mse"] for m in out]


def packed(cfg: dict[str, Any], replicas: int) -> tuple[float, list[float]]:
    from trainables import sinusoid

    start = time.perf_counter()
    out = sinusoid.run({**cfg, "seed": 0, "replicas": replicas})
    return time.perf_counter() - start, [out[f"test_mse/r{r}"] for r in range(replicas)]


def check_equal(seq: list[float], pack: list[float], rtol: float, width: int) -> float:
    """The largest relative difference; fails if any replica differs by more than rtol."""
    worst = max(abs(p - s) / max(abs(s), 1e-30) for s, p in zip(seq, pack))
    assert worst <= rtol, (
        f"width {width}: packed test_mse differs from sequential by {worst:.2e} relative "
        f"(> {rtol:g}); per seed sequential={seq} packed={pack}"
    )
    return worst


def main(argv: list[str] | None = None) -> None:
    import torch

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    r = args.replicas
    rows = []
    for width in args.widths:
        cfg = config(args, width)
        packed({**cfg, "steps": 2, "eval_every": 2}, 2)  # first-call costs are not per run
        t_seq, t_pack = float("inf"), float("inf")
        for _ in range(args.repeats):
            t, seq = sequential(cfg, r)
            t_seq = min(t_seq, t)
            t, pack = packed(cfg, r)
            t_pack = min(t_pack, t)
        worst = check_equal(seq, pack, args.rtol, width)
        rows.append((width, t_seq, t_pack, t_seq / t_pack, worst))
        print(
            f"width {width}: sequential {t_seq:.2f} s, packed {t_pack:.2f} s, "
            f"{t_seq / t_pack:.1f}x",
            flush=True,
        )

    print()
    print(
        f"R={r} seeds of sinusoid, {args.steps} steps, eval every {cfg['eval_every']}, "
        f"{args.threads} torch thread(s), fastest of {args.repeats}"
    )
    print(
        f"{'width':>6}{'sequential s':>14}{'packed s':>10}{'speed-up':>10}{'target':>9}"
        f"{'':7}{'max rel diff':>14}"
    )
    for width, t_seq, t_pack, speedup, worst in rows:
        target = TARGETS.get(width)
        if target is None:
            verdict, shown = "", "-"
        elif width in (16, 64):
            verdict, shown = ("met" if speedup >= target else "MISSED"), f">={target:g}x"
        else:
            verdict, shown = ("met" if speedup > target else "MISSED"), f">{target:g}x"
        print(
            f"{width:>6}{t_seq:>14.2f}{t_pack:>10.2f}{speedup:>9.1f}x{shown:>9} {verdict:6}"
            f"{worst:>14.1e}"
        )
    print(f"packed test_mse equals sequential to {args.rtol:g} relative for every seed (checked)")
    head = next((row for row in rows if row[0] == HEADLINE_WIDTH), rows[-1])
    print(f"replicas_speedup_w{head[0]}: {head[3]:.1f}x")


if __name__ == "__main__":
    main()
