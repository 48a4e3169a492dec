"""The one run path of every gradient-trained experiment.

An experiment declares a `Task`: its replica-batched model, its data splits, where each step's batch
comes from (`FullBatch`, `Minibatches`, `FreshSamples`), a per-replica loss, and what to measure.
`run(cfg, task, report, device)` does everything else: the device, moving model and data, the
optimizer with its per-replica learning rates and the paper's step decay, the evaluation cadence,
gradient probes, divergence, the final evaluation and the artifacts. Keeping it in one place is what
lets a fix or a speed-up reach every experiment at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from trainables.artifacts import ARTIFACTS
from trainables.config import ExperimentConfig, PerReplica, require
from trainables.data import Split
from trainables.nn import replica_generators
from trainables.optim import OptimizerName, ReplicaOptimizer
from trainables.report import DIVERGED, Reporter, diverged, no_report, summarise

LAST_BATCH = "batch"  # evaluate() finds the step's training batch under this key of its data
Data = Mapping[str, Split]
Measured = dict[str, Tensor]  # {metric: per-replica values [R]}
LossFn = Callable[[Tensor, Tensor], Tensor]  # (prediction, target) -> per-replica loss [R]


@dataclass(frozen=True)
class TrainingConfig(ExperimentConfig):
    """The optimisation fields every gradient-trained experiment shares (paper 000 A.1)."""

    lr: PerReplica[float] = 1e-3
    """learning rate"""
    lr_decay: float = 0.9
    """multiply the learning rate by this every decay_every steps"""
    decay_every: int = 500
    """steps between learning-rate decays (paper 000's code: 500)"""
    steps: int = 3000
    """optimizer steps (the specs' `paper` profiles carry each paper's budget)"""
    eval_every: int = 500
    """steps between evaluations (each one is a report to the scheduler)"""
    weight_decay: PerReplica[float] = 0.0
    """L2 weight decay, added to the gradient (paper 000's ReLU control, Fig. 7)"""
    optimizer: OptimizerName = "adam"
    """adam (paper 000 A.1), sgd (with `momentum`) or adadelta (paper 002)"""
    momentum: float | None = None
    """heavy-ball momentum of sgd (none: DEFAULT_MOMENTUM); the other optimizers have none"""

    DEFAULT_MOMENTUM: ClassVar[float] = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(all(v > 0 for v in self.each("lr")), "lr", "> 0", self.lr)
        wd = self.weight_decay
        require(all(v >= 0 for v in self.each("weight_decay")), "weight_decay", ">= 0", wd)
        require(0 < self.lr_decay <= 1, "lr_decay", "in (0, 1]", self.lr_decay)
        require(self.decay_every >= 1, "decay_every", ">= 1", self.decay_every)
        require(self.num_steps >= 1, "steps", ">= 1", self.num_steps)
        require(self.eval_period >= 1, "eval_every", ">= 1", self.eval_period)
        if self.momentum is not None:
            require(0 <= self.momentum < 1, "momentum", "in [0, 1)", self.momentum)
            require(
                self.optimizer == "sgd", "momentum",
                f"unset with optimizer {self.optimizer}, which has no momentum (it is sgd's)",
                self.momentum,
            )  # fmt: skip

    @property
    def sgd_momentum(self) -> float:
        return self.DEFAULT_MOMENTUM if self.momentum is None else self.momentum

    @property
    def num_steps(self) -> int:
        """Optimizer steps; an experiment may derive them (epochs, say) by overriding this."""
        return self.steps

    @property
    def eval_period(self) -> int:
        """Steps between evaluations; an experiment may derive it by overriding this."""
        return self.eval_every


# --- what an experiment declares ------------------------------------------------------------------


@dataclass(frozen=True)
class FullBatch:
    """Every step trains on the whole of `data[split]`."""

    split: str = "train"


@dataclass(frozen=True)
class Minibatches:
    """`size` points a step, drawn uniformly with replacement from `data[split]`, per replica."""

    size: int
    split: str = "train"


@dataclass(frozen=True)
class FreshSamples:
    """A new sample every step (paper 000 §3.2, "D → ∞"): `inputs(generator, n)` draws one
    replica's points on the CPU (so a seed gives the same batches on any device), and `label`
    computes the targets from them on the device (an `nn.Module` moves there with the model)."""

    inputs: Callable[[torch.Generator, int], Tensor]
    size: int
    label: Callable[[Tensor], Tensor]


BatchSource = FullBatch | Minibatches | FreshSamples


@dataclass(frozen=True)
class Task:
    """One experiment's training problem, built on the CPU from its Config.

    `evaluate(model, data)` and `final_evaluate(model, data)` return per-replica values; `data` is
    the task's splits on the device, plus the step's training batch under `LAST_BATCH`.
    `final_evaluate` adds what is too costly for every evaluation (robustness under attack, say) to
    the last one. `grad_probe(model)` runs on the gradients of each evaluation step.
    `artifacts(model, data, final, replica)` returns plot data (`trainables.artifacts`) of one
    replica (the first of its configuration), with the final per-replica metrics at hand.
    """

    model: nn.Module
    data: Data
    loss: LossFn
    evaluate: Callable[[nn.Module, Data], Measured]
    batches: BatchSource = FullBatch()
    final_evaluate: Callable[[nn.Module, Data], Measured] | None = None
    grad_probe: Callable[[nn.Module], Measured] | None = None
    artifacts: Callable[[nn.Module, Data, Measured, int], dict[str, Any]] | None = None


# --- the run --------------------------------------------------------------------------------------


def run(
    cfg: TrainingConfig,
    task: Task,
    report: Reporter = no_report,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Train all replicas together; report mean and per-replica metrics every `eval_period` steps.

    A non-finite loss in any replica ends training with a reason naming the replicas and the step,
    reported as the final metrics (never an exception: a diverging trial is a result of the sweep,
    not a crash of it). Returns the last report's metrics.
    """
    whole = slice(0, cfg.replicas)
    (metrics,) = run_groups(
        cfg, task, lambda step, groups: [0] if report(step, groups[0]) else [], device, [whole]
    )
    return metrics


GroupReporter = Callable[[int, Mapping[int, dict[str, Any]]], Iterable[int]]


def run_groups(
    cfg: TrainingConfig,
    task: Task,
    report: GroupReporter,
    device: str | torch.device | None,
    groups: Sequence[slice],
) -> list[dict[str, Any]]:
    """Train groups of replicas (the configurations of a packed trial) as one stacked model.

    Each group is summarised and reported on its own: `report(step, {group: metrics})` at every
    evaluation, for the groups still training; it returns the groups to stop there (an early
    stopping rule). A group whose loss turns non-finite reports its reason once and stops; a
    stopped group's replicas stop updating, and the other groups train on exactly as if it were not
    there (updates and losses are per replica). Returns each group's last metrics.
    """
    dev = pick_device(device)
    model = task.model.to(dev)
    data = {k: v.to(dev) for k, v in task.data.items()}
    draw = batch_source(task.batches, data, cfg.seeds, dev)
    optimizer = ReplicaOptimizer(
        model.parameters(),
        kind=cfg.optimizer,
        lr=cfg.each("lr"),
        weight_decay=cfg.each("weight_decay"),
        momentum=cfg.sgd_momentum,
        lr_decay=cfg.lr_decay,
        decay_every=cfg.decay_every,
    )
    steps, every = cfg.num_steps, cfg.eval_period
    active = dict(enumerate(groups))
    last_metrics: list[dict[str, Any]] = [{} for _ in groups]
    finite = None  # accumulated on the device; read only at evaluations to avoid a sync a step
    for step in range(1, steps + 1):
        x, y = draw(step)
        loss = task.loss(model(x), y)
        ok = torch.isfinite(loss)
        finite = ok if finite is None else finite & ok
        optimizer.zero_grad()
        # The sum keeps every replica's gradient equal to the gradient it would have alone.
        loss.sum().backward()
        evaluating = step % every == 0 or step == steps
        probed = task.grad_probe(model) if evaluating and task.grad_probe is not None else {}
        optimizer.step()
        if not evaluating:
            continue
        bad = set((~finite).nonzero().flatten().tolist())
        last = step == steps
        seen = {**data, LAST_BATCH: Split(x, y)}
        measured = {**task.evaluate(model, seen), **probed}
        if last and task.final_evaluate is not None:
            measured.update(task.final_evaluate(model, seen))
        reports, ended = {}, []
        for g, rows in active.items():
            metrics = summarise({k: v[rows] for k, v in measured.items()})
            failed = sorted(r - rows.start for r in bad if rows.start <= r < rows.stop)
            if failed:
                lrs = ", ".join(f"{cfg.each('lr')[rows.start + r]:g}" for r in failed)
                reason = f"non-finite loss in replica(s) {failed} by step {step} (lr={lrs})"
                metrics.update(diverged(reason))
                ended.append(g)
            elif last:
                metrics[DIVERGED] = 0.0
                if task.artifacts is not None:
                    with torch.no_grad():
                        metrics[ARTIFACTS] = task.artifacts(model, seen, measured, rows.start)
            reports[g] = last_metrics[g] = metrics
        ended.extend(g for g in report(step, reports) if g in active)
        for g in set(ended):
            optimizer.freeze(active.pop(g))
        if not active:
            break
    return last_metrics


def batch_source(
    source: BatchSource, data: Data, seeds: Sequence[int], device: torch.device
) -> Callable[[int], tuple[Tensor, Tensor]]:
    """step -> (x [R, B, d], y): the task's batches on the device, per replica from its own seed."""
    if isinstance(source, FullBatch):
        split = data[source.split]
        return lambda step: (split.x, split.y)
    gens = replica_generators(seeds, "batches")
    if isinstance(source, Minibatches):
        split = data[source.split]
        n = len(split)
        rows = torch.arange(split.x.shape[0], device=device)[:, None]

        def minibatch(step: int) -> tuple[Tensor, Tensor]:
            idx = torch.stack([torch.randint(n, (source.size,), generator=g) for g in gens])
            idx = idx.to(device)
            return split.x[rows, idx], split.y[rows, idx]

        return minibatch
    label = source.label.to(device) if isinstance(source.label, nn.Module) else source.label

    @torch.no_grad()
    def fresh(step: int) -> tuple[Tensor, Tensor]:
        x = torch.stack([source.inputs(g, source.size) for g in gens]).to(device)
        return x, label(x)

    return fresh


# --- losses and metrics ---------------------------------------------------------------------------


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Per-replica mean squared error, [R]."""
    return (pred - target).pow(2).flatten(1).mean(dim=1)


def nmse(pred: Tensor, target: Tensor) -> Tensor:
    """Per-replica MSE over the variance of the targets, [R]: 1 is the error of predicting their
    mean, so targets of different spread (B6 against a scrambled B6, teachers) share one scale."""
    return mse(pred, target) / target.flatten(1).var(dim=1, correction=0).clamp_min(1e-30)


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-replica mean cross-entropy, [R]; logits [R, B, C], labels [R, B]."""
    r, b, c = logits.shape
    per_point = nn.functional.cross_entropy(
        logits.reshape(r * b, c), labels.reshape(r * b), reduction="none"
    )
    return per_point.view(r, b).mean(dim=1)


def accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    return (logits.argmax(dim=-1) == labels).double().mean(dim=1)


@torch.no_grad()
def split_metrics(model: nn.Module, splits: Data, metrics: Mapping[str, LossFn]) -> Measured:
    """Every metric on every split, named "{split}_{metric}" (train_mse, test_acc, ...)."""
    out = {}
    for split_name, split in splits.items():
        pred = model(split.x)
        for metric_name, fn in metrics.items():
            out[f"{split_name}_{metric_name}"] = fn(pred, split.y)
    return out


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """CUDA when visible (Ray exposes only the GPU it assigned), else CPU."""
    if device not in (None, "auto"):
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
