"""The one training loop, shared by every experiment.

An experiment declares a replica-batched model, a batch source, a per-replica loss and per-replica
metrics; this module owns everything else: the optimizer and the paper's step decay, the evaluation
cadence, divergence, and reporting. Keeping it in one place is what lets a fix or a speed-up reach
every experiment at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn

from trainables.artifacts import ARTIFACTS
from trainables.config import ExperimentConfig, require
from trainables.data import Sampler, Split, stack
from trainables.nn import replica_generators


class Reporter(Protocol):
    """Called at every evaluation with the step and flat metrics; returns True to stop early."""

    def __call__(self, step: int, metrics: Mapping[str, Any]) -> bool | None: ...


def no_report(step: int, metrics: Mapping[str, Any]) -> bool:
    return False


Batches = Callable[[int], tuple[Tensor, Tensor]]  # step -> (x [R, B, d], y)
LossFn = Callable[[Tensor, Tensor], Tensor]  # (prediction, target) -> per-replica loss [R]
Evaluate = Callable[[nn.Module], dict[str, Tensor]]  # model -> {metric: per-replica values [R]}


@dataclass(frozen=True)
class Schedule:
    """Optimisation settings every experiment shares (paper 000 A.1: Adam, lr 1e-3, decay 0.9)."""

    steps: int
    lr: float
    lr_decay: float = 0.9
    decay_every: int = 500
    eval_every: int = 500
    optimizer: Literal["adam", "sgd", "adadelta"] = "adam"
    momentum: float = 0.0
    weight_decay: float = 0.0


@dataclass(frozen=True)
class TrainingConfig(ExperimentConfig):
    """The optimisation fields every gradient-trained experiment shares (paper 000 A.1)."""

    lr: float = 1e-3
    """Adam learning rate"""
    lr_decay: float = 0.9
    """multiply the learning rate by this every decay_every steps"""
    decay_every: int = 500
    """steps between learning-rate decays (paper 000's code: 500)"""
    steps: int = 3000
    """optimizer steps (the specs' `paper` profiles carry each paper's budget)"""
    eval_every: int = 500
    """steps between evaluations (each one is a report to the scheduler)"""
    weight_decay: float = 0.0
    """L2 weight decay (paper 000's ReLU control, Fig. 7); no effect on σ-normalised weights"""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.lr > 0, "lr", "> 0", self.lr)
        require(self.weight_decay >= 0, "weight_decay", ">= 0", self.weight_decay)
        require(0 < self.lr_decay <= 1, "lr_decay", "in (0, 1]", self.lr_decay)
        require(self.decay_every >= 1, "decay_every", ">= 1", self.decay_every)
        require(self.steps >= 1, "steps", ">= 1", self.steps)
        require(self.eval_every >= 1, "eval_every", ">= 1", self.eval_every)

    @property
    def schedule(self) -> Schedule:
        return Schedule(
            steps=self.steps,
            lr=self.lr,
            lr_decay=self.lr_decay,
            decay_every=self.decay_every,
            eval_every=self.eval_every,
            weight_decay=self.weight_decay,
        )


@dataclass
class Outcome:
    """How training ended: `status` is "completed", "stopped" (by the reporter) or "diverged"."""

    status: str
    step: int
    metrics: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


def train(
    model: nn.Module,
    batches: Batches,
    loss_fn: LossFn,
    evaluate: Evaluate,
    schedule: Schedule,
    report: Reporter = no_report,
    grad_probe: Evaluate | None = None,
    final_evaluate: Evaluate | None = None,
    artifacts: Callable[[nn.Module], dict[str, Any]] | None = None,
) -> Outcome:
    """Train all replicas together; report mean and per-replica metrics every `eval_every` steps.

    A non-finite loss in any replica ends training with status "diverged" and a reason naming the
    replicas and the step, reported as the final metrics (never an exception: a diverging trial is
    a result of the sweep, not a crash of it). `grad_probe(model)` runs on the gradients of each
    evaluation step, right after the backward pass, and its values join that step's metrics.
    `final_evaluate(model)` adds metrics that are too costly for every evaluation (robustness under
    attack, say) to the last step's. `artifacts(model)` runs once, at the last step, and its plot
    data (`trainables.artifacts`) goes into the final report under "artifacts".
    """
    optimizer = make_optimizer(model.parameters(), schedule)
    decay = torch.optim.lr_scheduler.StepLR(optimizer, schedule.decay_every, schedule.lr_decay)
    finite = None  # accumulated on the device; checked only at evaluations to avoid a sync a step
    metrics: dict[str, Any] = {}
    for step in range(1, schedule.steps + 1):
        x, y = batches(step)
        loss = loss_fn(model(x), y)
        ok = torch.isfinite(loss)
        finite = ok if finite is None else finite & ok
        optimizer.zero_grad(set_to_none=True)
        # The sum keeps every replica's gradient equal to the gradient it would have alone.
        loss.sum().backward()
        evaluating = step % schedule.eval_every == 0 or step == schedule.steps
        probed = grad_probe(model) if evaluating and grad_probe is not None else {}
        optimizer.step()
        decay.step()
        if not evaluating:
            continue
        bad = (~finite).nonzero().flatten().tolist()
        last = step == schedule.steps and final_evaluate is not None
        metrics = summarise(
            {**evaluate(model), **probed, **(final_evaluate(model) if last else {})}
        )
        if bad:
            reason = f"non-finite loss in replica(s) {bad} by step {step} (lr={schedule.lr:g})"
            metrics.update({"diverged": 1.0, "failure_reason": reason})
            report(step, metrics)
            return Outcome("diverged", step, metrics, reason)
        if step == schedule.steps:
            metrics["diverged"] = 0.0
            if artifacts is not None:
                with torch.no_grad():
                    metrics[ARTIFACTS] = artifacts(model)
        if report(step, metrics):
            return Outcome("stopped", step, metrics)
    return Outcome("completed", schedule.steps, metrics)


def train_full_batch(
    cfg: TrainingConfig,
    model: nn.Module,
    splits: Mapping[str, Split],
    loss_fn: LossFn,
    evaluate: Callable[[nn.Module, Mapping[str, Split]], dict[str, Tensor]],
    report: Reporter,
    device: str | None = None,
    artifacts: Callable[[nn.Module, Mapping[str, Split]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Move model and splits to the device, train on splits["train"], return the final metrics."""
    dev = pick_device(device)
    on_device = {k: v.to(dev) for k, v in splits.items()}
    outcome = train(
        model.to(dev),
        full_batch(on_device["train"]),
        loss_fn,
        lambda m: evaluate(m, on_device),
        cfg.schedule,
        report,
        artifacts=(lambda m: artifacts(m, on_device)) if artifacts is not None else None,
    )
    return outcome.metrics


def make_optimizer(params: Any, schedule: Schedule) -> torch.optim.Optimizer:
    if schedule.optimizer == "adam":
        return torch.optim.Adam(params, lr=schedule.lr, weight_decay=schedule.weight_decay)
    if schedule.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=schedule.lr, momentum=schedule.momentum, weight_decay=schedule.weight_decay
        )
    if schedule.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=schedule.lr, weight_decay=schedule.weight_decay)
    raise ValueError(f"`optimizer` must be adam, sgd or adadelta, but got {schedule.optimizer!r}")


MAX_REPLICA_METRICS = 32  # beyond this many replicas, per-replica metrics would flood the tracker


def summarise(per_replica: Mapping[str, Tensor]) -> dict[str, float]:
    """{metric: [R]} -> the mean under the plain name plus `metric/rK` for each replica.

    Past `MAX_REPLICA_METRICS` replicas (1,000 restarts of a tiny net, say) the replicas are
    summarised instead, by `metric/std`, `metric/min` and `metric/max`.
    """
    out: dict[str, float] = {}
    for name, values in per_replica.items():
        vals = values.detach().double().cpu().flatten()
        out[name] = vals.mean().item()
        if len(vals) <= MAX_REPLICA_METRICS:
            out.update({f"{name}/r{r}": v for r, v in enumerate(vals.tolist())})
        else:
            out.update({f"{name}/std": vals.std().item(), f"{name}/min": vals.min().item(),
                        f"{name}/max": vals.max().item()})  # fmt: skip
    return out


# --- batch sources --------------------------------------------------------------------------------


def full_batch(split: Split) -> Batches:
    return lambda step: (split.x, split.y)


def minibatches(split: Split, batch_size: int, seeds: Sequence[int]) -> Batches:
    """Uniform mini-batches with replacement; replica r's indices come from its own generator."""
    gens = replica_generators(seeds, "batches")
    n = len(split)
    rows = torch.arange(split.x.shape[0], device=split.x.device)[:, None]

    def draw(step: int) -> tuple[Tensor, Tensor]:
        idx = torch.stack([torch.randint(n, (batch_size,), generator=g) for g in gens])
        idx = idx.to(split.x.device)
        return split.x[rows, idx], split.y[rows, idx]

    return draw


def fresh_samples(
    sampler: Sampler, batch_size: int, seeds: Sequence[int], device: torch.device | str
) -> Batches:
    """A new sample every step (paper 000 §3.2, "D → ∞")."""
    gens = replica_generators(seeds, "batches")

    def draw(step: int) -> tuple[Tensor, Tensor]:
        batch = stack(sampler, gens, batch_size).to(device)
        return batch.x, batch.y

    return draw


# --- losses and metrics ---------------------------------------------------------------------------


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Per-replica mean squared error, [R]."""
    return (pred - target).pow(2).flatten(1).mean(dim=1)


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
def split_metrics(
    model: nn.Module, splits: Mapping[str, Split], metrics: Mapping[str, LossFn]
) -> dict[str, Tensor]:
    """Every metric on every split, named "{split}_{metric}" (train_mse, test_acc, ...)."""
    out = {}
    for split_name, split in splits.items():
        pred = model(split.x)
        for metric_name, fn in metrics.items():
            out[f"{split_name}_{metric_name}"] = fn(pred, split.y)
    return out


def pick_device(device: str | None = None) -> torch.device:
    """CUDA when visible (Ray exposes only the GPU it assigned), else CPU."""
    if device not in (None, "auto"):
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
