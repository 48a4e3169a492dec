"""The packed trainer's hot path in ns per hidden unit × point × replica × step, against this core.

What it measures, on one torch thread: one training step of the stacked sinusoid model (the
σ-normalised two-layer tanh net; forward, backward and the replica optimizer's Adam step) for
widths 16, 64 and 1000 on 100 full-batch points, with 1 to 256 replicas (a pack of K
configurations × R seeds is K·R replicas), as ns per hidden unit × point × replica; and, for scale,
what this core does alone: an elementwise op (`mul`, `tanh`) in ns per element on a tensor of the
same size, and a batched matmul's rate in GFLOP/s. `--compile` also times `torch.compile` of the
loss and its backward (compile time and step time), which changes no number beyond 1e-5.

Run (about a minute on one core; `--compile` adds a minute):

    .venv/bin/python benchmarks/kernels.py
    .venv/bin/python benchmarks/kernels.py --compile

The last line is the headline: `kernel_ns_w1000_r4: X.X` (the cheapest width-1000 point).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too

import torch  # noqa: E402

from trainables import engine, sinusoid  # noqa: E402
from trainables.optim import ReplicaOptimizer  # noqa: E402

POINTS = 100
SHAPES = {16: (1, 4, 16, 64, 256), 64: (1, 4, 16, 64, 256), 1000: (1, 4, 16, 64)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30, help="timed steps per point")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow)")
    return p.parse_args(argv)


def timed(fn, steps: int) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def trainer(width: int, replicas: int):
    cfg = sinusoid.Config.from_mapping(
        {"width": width, "replicas": replicas, "train_points": POINTS, "test_points": 1,
         "ood_points": 1, "sigma_inv": [1.0 + 0.01 * r for r in range(replicas)]}
    )  # fmt: skip
    task = sinusoid.make_task(cfg)
    model, split = task.model, task.data["train"]
    opt = ReplicaOptimizer(
        model.parameters(), kind="adam", lr=cfg.each("lr"), weight_decay=cfg.each("weight_decay")
    )

    def loss() -> torch.Tensor:
        return engine.mse(model(split.x), split.y).sum()

    def step(loss_fn=loss) -> None:
        opt.zero_grad()
        loss_fn().backward()
        opt.step()

    return loss, step


def core_rates(elements: int) -> tuple[float, float, float]:
    """ns per element of mul and tanh on `elements` floats, and bmm GFLOP/s at [16, 100, 1000]."""
    a, b = torch.randn(elements), torch.randn(elements)
    mul = timed(lambda: torch.mul(a, b), 20) / elements * 1e9
    tanh = timed(lambda: torch.tanh(a), 20) / elements * 1e9
    x, w = torch.randn(16, POINTS, 1000), torch.randn(16, 1000, 64)
    gflops = 2 * 16 * POINTS * 1000 * 64 / timed(lambda: torch.bmm(x, w), 20) / 1e9
    return mul, tanh, gflops


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    mul, tanh, gflops = core_rates(16 * POINTS * 1000)
    print(f"this core: mul {mul:.2f} ns/element, tanh {tanh:.2f} ns/element (1.6M floats); "
          f"bmm {gflops:.1f} GFLOP/s")  # fmt: skip
    print(f"{'width':>6}{'replicas':>10}{'step ms':>10}{'ns/unit·pt·replica':>20}")
    figures = {}
    for width, counts in SHAPES.items():
        for replicas in counts:
            _, step = trainer(width, replicas)
            seconds = timed(step, args.steps)
            ns = seconds / (width * POINTS * replicas) * 1e9
            figures[(width, replicas)] = ns
            print(f"{width:>6}{replicas:>10}{seconds * 1e3:>10.3f}{ns:>20.2f}", flush=True)
    if args.compile:
        for width, replicas in ((64, 64), (1000, 16)):
            loss, step = trainer(width, replicas)
            eager = timed(step, args.steps)
            start = time.perf_counter()
            compiled = torch.compile(loss)
            step(compiled)
            took = time.perf_counter() - start
            fast = timed(lambda compiled=compiled, step=step: step(compiled), args.steps)
            pays = f"pays after {took / (eager - fast):.0f} steps" if fast < eager else "never pays"
            print(
                f"torch.compile w{width} r{replicas}: compile {took:.0f} s, step "
                f"{eager * 1e3:.2f} -> {fast * 1e3:.2f} ms ({eager / fast:.2f}x); {pays}"
            )
    print(f"kernel_ns_w1000_r4: {figures[(1000, 4)]:.1f}")


if __name__ == "__main__":
    main()
