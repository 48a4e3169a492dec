"""Teacher/student regression (paper 003 part A): under-, exact- and over-parameterised students.

A frozen teacher, a 100→75→50→10→1 ReLU network with i.i.d. N(0, 1) weights and biases, labels
inputs drawn from U[0, 2]^100. A student of the same kind (ReLU after every hidden layer, linear
output) learns it with the MSE loss from a fresh batch of B = 128 inputs every step:
under: one hidden layer of 10; exact: 75, 50, 10 (the teacher's shape); over: 200, 200, 200, 100.
The learning rate is what a sweep tunes, per student. Metrics, at every evaluation: train_mse (the
latest batch), test_mse on a fixed test set, and the 1-Wasserstein distance between the student's
and the teacher's parameter distributions (`trainables.probes`): w1_weights / w1_biases over all
layers together, w1_all over every parameter, and per layer w1_weight_l{i} / w1_bias_l{i} where the
layer shapes match (the `exact` student).

Target metric: test_mse. One run: `smoothsweep train teacher_student --set student=over`.

Choices the paper leaves open, and what we do:
- One teacher per replica, drawn from the replica's own "teacher" generator stream: replicas
  differ in teacher, test set, batches and student initialisation, so their mean is an average
  over teachers too. The teacher's parameters are frozen (requires_grad False) and never reach
  the optimizer.
- Students use PyTorch's default initialisation, U(-1/√fan_in, 1/√fan_in) for weights and biases;
  the paper prescribes none.
- Optimizer: Adam ("of your choice"), at a constant learning rate by default (lr_decay = 1): the
  paper asks only for a tuned rate. Steps default to 10,000 ("until quasi-stationary"); the
  `paper` profile of the spec trains longer.
- Batches are `engine.FreshSamples`: each replica's inputs come from its own "batches" stream on
  the CPU, and `TeacherLabels` (the frozen teacher with the target shift and scale, an nn.Module
  so that the engine moves it to the device) labels them there. train_mse is the MSE on the most
  recent training batch (`engine.LAST_BATCH`), measured at each evaluation right after that
  batch's optimizer step (the engine reports at evaluations, not at every batch).
- Scale: with N(0, 1) parameters and inputs in [0, 2], the teacher's output has a large
  teacher-specific offset and a spread of order 1e2-1e3, so MSEs start around 1e4-1e6. As in the
  paper, MSEs are reported in the teacher's units; `normalise_targets` instead standardises each
  replica's targets by the mean and std of its teacher's outputs on the test set (metrics are then
  in those units). test_nmse = test_mse / Var(test targets) is reported either way, so replicas
  with different teachers compare on one scale (1 is the error of predicting the mean).
- Parameter distances compare the student's raw parameters with the teacher's, per replica; the
  per-layer distances are reported only for the `exact` student, whose layers pair one to one
  with the teacher's. w1_all pools weights and biases of all layers (the paper's "collection of all
  weights and biases"); w1_weights and w1_biases keep weights and biases apart. With
  normalise_targets the student learns a rescaled teacher, so its parameters need not approach
  the teacher's: read the distances from runs on raw targets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor, nn

from trainables import artifacts, engine, probes
from trainables.config import require
from trainables.data import Split, uniform
from trainables.nn import ReplicaMLP, replica_generators
from trainables.report import Metric, Reporter, declare, no_report

Student = Literal["under", "exact", "over"]
INPUTS = 100
INPUT_HIGH = 2.0  # inputs are U[0, INPUT_HIGH]^INPUTS
TEACHER_HIDDEN = (75, 50, 10)
STUDENT_HIDDEN: dict[str, tuple[int, ...]] = {
    "under": (10,),
    "exact": TEACHER_HIDDEN,
    "over": (200, 200, 200, 100),
}
EVAL_CHUNK = 10_000  # test points per forward pass at evaluation: bounds the activations' memory


@dataclass(frozen=True)
class Config(engine.TrainingConfig):
    student: Student = "exact"
    """student size: under (10), exact (75, 50, 10, the teacher's), over (200, 200, 200, 100)"""
    test_points: int = 60_000
    """fixed test points per replica, labelled by the replica's teacher (paper: at least 6e4)"""
    batch_size: int = 128
    """fresh inputs per step (paper: B = 128, not tuned)"""
    normalise_targets: bool = False
    """standardise targets by the teacher's output mean and std on the test set (paper: raw)"""
    lr_decay: float = 1.0
    """multiply the learning rate by this every decay_every steps (1: constant, the default)"""
    steps: int = 10_000
    """optimizer steps, one fresh batch each"""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.test_points >= 1, "test_points", ">= 1", self.test_points)
        require(self.batch_size >= 1, "batch_size", ">= 1", self.batch_size)

    def metrics(self) -> dict[str, Metric]:
        # per-layer distances only where the layers pair one to one with the teacher's
        exact = STUDENT_HIDDEN[self.student] == TEACHER_HIDDEN
        layers = range(len(TEACHER_HIDDEN) + 1) if exact else range(0)
        per_layer = [f"w1_{kind}_l{i}" for i in layers for kind in ("weight", "bias")]
        return {
            **declare(minimise=["test_mse", "test_nmse", "train_mse"]),
            **declare(diagnostics=["w1_weights", "w1_biases", "w1_all", *per_layer]),
        }


# --- networks -------------------------------------------------------------------------------------


def make_teacher(seeds: Sequence[int]) -> ReplicaMLP:
    """The frozen teachers, one per seed: 100→75→50→10→1 ReLU, weights and biases i.i.d. N(0, 1)."""
    gens = replica_generators(seeds, "teacher")
    teacher = ReplicaMLP([INPUTS, *TEACHER_HIDDEN, 1], gens, activation="relu")
    with torch.no_grad():  # replace the default init by the paper's standard normal draws
        for layer in teacher.layers:
            for param in (layer.weight, layer.bias):
                param.copy_(torch.stack([torch.randn(param.shape[1:], generator=g) for g in gens]))
    return teacher.requires_grad_(False)


def make_student(cfg: Config) -> ReplicaMLP:
    """The student: ReLU hidden layers of STUDENT_HIDDEN[cfg.student], PyTorch's default init."""
    sizes = [INPUTS, *STUDENT_HIDDEN[cfg.student], 1]
    return ReplicaMLP(sizes, replica_generators(cfg.seeds, "init"), activation="relu")


def parameter_count(model: ReplicaMLP) -> int:
    """Learnable parameters of one replica."""
    return sum(p[0].numel() for p in model.parameters())


class TeacherLabels(nn.Module):
    """x [R, B, 100] -> (teacher(x) - shift) / scale [R, B, 1]: the targets of every batch.

    A module, so that the engine moves the teacher and the scaling to the device with the model;
    the teacher stays frozen (its parameters never reach the optimizer).
    """

    def __init__(self, teacher: ReplicaMLP, shift: Tensor, scale: Tensor) -> None:
        super().__init__()
        self.teacher = teacher
        self.register_buffer("shift", shift)
        self.register_buffer("scale", scale)

    def forward(self, x: Tensor) -> Tensor:
        return (self.teacher(x) - self.shift) / self.scale


# --- data -----------------------------------------------------------------------------------------


def sample_inputs(gen: torch.Generator, n: int) -> Tensor:
    """One replica's inputs x [n, 100], uniform on [0, 2]^100."""
    return uniform(gen, n, INPUTS, INPUT_HIGH)


@torch.no_grad()
def predict(model: ReplicaMLP, x: Tensor, chunk: int = EVAL_CHUNK) -> Tensor:
    """model(x) for x [R, N, d], N split into chunks of `chunk` points."""
    return torch.cat([model(part) for part in x.split(chunk, dim=1)], dim=1)


def make_test_set(cfg: Config, teacher: ReplicaMLP) -> Split:
    """The fixed test set: inputs from each replica's "data" stream, labelled by its teacher (raw).

    Labelled where the teacher is: on the CPU when the task is built.
    """
    gens = replica_generators(cfg.seeds, "data")
    x = torch.stack([sample_inputs(g, cfg.test_points) for g in gens])
    return Split(x, predict(teacher, x))


def target_scaling(y: Tensor, normalise: bool) -> tuple[Tensor, Tensor]:
    """(shift, scale) [R, 1, 1] taking targets y to (y - shift) / scale; identity if not asked."""
    if not normalise:
        ones = torch.ones(y.shape[0], 1, 1, device=y.device)
        return ones * 0, ones
    return y.mean(dim=(1, 2), keepdim=True), y.std(dim=(1, 2), keepdim=True).clamp_min(1e-12)


# --- evaluation -----------------------------------------------------------------------------------


def parameter_distances(student: ReplicaMLP, teacher: ReplicaMLP) -> dict[str, Tensor]:
    """1-Wasserstein distances between student and teacher parameter distributions, each [R].

    w1_weights / w1_biases pool all layers, w1_all pools everything; w1_weight_l{i} and
    w1_bias_l{i} compare layer i with the teacher's layer i when every layer's shape matches.
    """
    sw = [layer.weight for layer in student.layers]
    sb = [layer.bias for layer in student.layers]
    tw = [layer.weight for layer in teacher.layers]
    tb = [layer.bias for layer in teacher.layers]
    out = {
        "w1_weights": probes.replica_wasserstein(sw, tw),
        "w1_biases": probes.replica_wasserstein(sb, tb),
        "w1_all": probes.replica_wasserstein(sw + sb, tw + tb),
    }
    if [w.shape for w in sw] == [w.shape for w in tw]:
        for i in range(len(sw)):
            out[f"w1_weight_l{i}"] = probes.replica_wasserstein(sw[i], tw[i])
            out[f"w1_bias_l{i}"] = probes.replica_wasserstein(sb[i], tb[i])
    return out


@torch.no_grad()
def evaluate(student: ReplicaMLP, data: engine.Data, teacher: ReplicaMLP) -> engine.Measured:
    """train_mse (the step's batch), test_mse, test_nmse and the parameter distances, each [R]."""
    test, batch = data["test"], data[engine.LAST_BATCH]
    pred = predict(student, test.x)
    test_mse = engine.mse(pred, test.y)
    out = {
        "test_mse": test_mse,
        "test_nmse": engine.nmse(pred, test.y),
        "train_mse": engine.mse(student(batch.x), batch.y),
    }
    out.update({k: v.to(test_mse.device) for k, v in parameter_distances(student, teacher).items()})
    return out


def weight_histograms(
    student: ReplicaMLP,
    data: engine.Data,
    final: engine.Measured,
    replica: int,
    teacher: ReplicaMLP,
) -> dict[str, Any]:
    """One replica's weight and bias distributions, student against teacher (shared bins)."""
    out = {}
    for kind in ("weight", "bias"):
        samples = [
            torch.cat([getattr(layer, kind)[replica].flatten() for layer in model.layers])
            for model in (student, teacher)
        ]
        edges, (s_heights, t_heights) = probes.shared_histograms(samples, bins=40)
        out[f"{kind}_histogram"] = artifacts.histogram(
            edges.tolist(), {"student": s_heights.tolist(), "teacher": t_heights.tolist()},
            title=f"{kind} distribution (replica {replica})", x_label=kind,
        )  # fmt: skip
    return out


def make_task(cfg: Config) -> engine.Task:
    """The student, the test set labelled on the CPU, and batches labelled by `TeacherLabels`.

    `evaluate` and `weight_histograms` hold the same teacher module as the labels: the engine's
    move of the labels to the device moves it for them too.
    """
    teacher = make_teacher(cfg.seeds)
    raw = make_test_set(cfg, teacher)
    shift, scale = target_scaling(raw.y, cfg.normalise_targets)
    test = Split(raw.x, (raw.y - shift) / scale)
    return engine.Task(
        make_student(cfg),
        {"test": test},
        engine.mse,
        partial(evaluate, teacher=teacher),
        batches=engine.FreshSamples(
            sample_inputs, cfg.batch_size, TeacherLabels(teacher, shift, scale)
        ),
        artifacts=partial(weight_histograms, teacher=teacher),
    )


def run(
    config: Mapping[str, Any], report: Reporter = no_report, device: str | None = None
) -> dict[str, Any]:
    cfg = Config.from_mapping(config)
    return engine.run(cfg, make_task(cfg), report, device)
