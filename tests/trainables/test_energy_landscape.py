"""energy_landscape (paper 002): W_f, the data, the de-symmetrisation and the basin start."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables import energy_landscape as el
from trainables.config import ConfigError
from trainables.data import sawtooth as data
from trainables.nn import ReplicaMLP, replica_generators


def xs() -> torch.Tensor:
    return data.inputs()[:, None]


def f(x: torch.Tensor) -> torch.Tensor:
    """f from numpy alone: a triangle wave of 16 teeth plus np.interp of the spline's knots."""
    x = x.numpy()
    saw = data.SAW_AMPLITUDE * (1 - np.abs(1 - 2 * np.mod(16 * x, 1.0)))
    return torch.from_numpy(saw + np.interp(x, data.SPLINE_KNOTS, data.SPLINE_VALUES))


def random_network(replicas: int, seed: int, scale: float = 1.0) -> el.Params:
    model = ReplicaMLP([1, 5, 5, 5, 5, 5, 1], replica_generators(range(seed, seed + replicas), "t"))
    return [(w.detach().double() * scale, b.detach().double() * scale) for w, b in
            el.model_params(model)]  # fmt: skip


def permute_and_rescale(params: el.Params, gen: torch.Generator) -> el.Params:
    """A random unit permutation and positive rescaling per hidden layer: the same function."""
    ws, bs = [w.clone() for w, _ in params], [b.clone() for _, b in params]
    for i in range(len(ws) - 1):
        n = bs[i].shape[-1]
        perm = torch.randperm(n, generator=gen)
        c = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(-1.5, 1.5, generator=gen))
        ws[i], bs[i] = ws[i][:, perm] * c, bs[i][perm] * c
        ws[i + 1] = ws[i + 1][perm, :] / c[:, None]
    return list(zip(ws, bs))


def test_target_network_is_sawtooth_plus_spline_at_every_data_point():
    wf = el.target_network()
    assert el.flatten(wf).shape == (136,)  # the paper's 136-dimensional weight space
    x = xs()
    out = el.network_output(wf, x)
    assert (out - f(x)).pow(2).mean().item() < 1e-28
    # the data module's closed forms are what W_f computes
    torch.testing.assert_close(out, data.sawtooth(x) + data.spline(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(data.target(x), data.sawtooth(x) + data.spline(x), rtol=0, atol=0)
    # the left two columns alone give the sawtooth, the right three the spline
    left = [(w.clone(), b.clone()) for w, b in wf]
    right = [(w.clone(), b.clone()) for w, b in wf]
    left[-1][0][2:], left[-1][1][:], right[-1][0][:2] = 0.0, 0.0, 0.0
    saw = el.network_output(left, x)
    torch.testing.assert_close(saw, data.sawtooth(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(el.network_output(right, x), data.spline(x), rtol=0, atol=1e-12)
    # high frequency: 16 teeth; low frequency: one period
    peaks = (saw[1:-1] > saw[:-2]) & (saw[1:-1] > saw[2:])
    assert peaks.sum().item() == 16
    # the hand-built network uses only the 2 + 3 block structure
    for w, _ in wf[1:-1]:
        assert (w[:2, 2:] == 0).all() and (w[2:, :2] == 0).all()


def test_data_is_the_knots_and_nine_points_between_each_pair():
    kn = data.knots()
    assert len(kn) == 33 and set(data.SPLINE_KNOTS) <= set(kn.tolist())
    x = data.inputs()
    assert len(x) == len(kn) + 9 * (len(kn) - 1) == 321
    assert set(kn.tolist()) <= set(x.tolist()) and (torch.diff(x) > 0).all()
    split = el.make_data(el.Config(replicas=3))["train"]
    assert split.x.shape == split.y.shape == (3, 321, 1)
    torch.testing.assert_close(split.y[2].double(), f(x[:, None]), rtol=0, atol=1e-6)
    # ... and W_f's output at those points, as the paper fits the network's output
    wf = el.network_output(el.target_network(), x[:, None])
    torch.testing.assert_close(split.y[0].double(), wf, rtol=0, atol=1e-6)
    assert data.sawtooth_splits(3)["train"].x.equal(split.x)


@pytest.mark.parametrize("which", ["wf", "random", "large"])
def test_desymmetrisation_keeps_the_function_is_balanced_and_idempotent(which):
    params = {
        "wf": lambda: el.target_network(),
        "random": lambda: random_network(4, 0),
        "large": lambda: random_network(4, 7, scale=3.0),
    }[which]()
    x = torch.linspace(-0.5, 1.5, 401, dtype=torch.float64)[:, None]
    form = el.desymmetrise(params)
    torch.testing.assert_close(
        el.network_output(form, x), el.network_output(params, x), rtol=0, atol=1e-10
    )
    assert (el.flatten(form).norm(dim=-1) <= el.flatten(params).norm(dim=-1) + 1e-12).all()
    for (w, b), (w_next, _) in zip(form[:-1], form[1:]):  # the minimum: in-norm = out-norm
        incoming = w.pow(2).sum(-2) + b.pow(2)
        torch.testing.assert_close(incoming, w_next.pow(2).sum(-1), rtol=1e-6, atol=1e-12)
        assert (torch.diff(w.norm(dim=-2), dim=-1) >= 0).all()  # sorted by column norm
    again = el.desymmetrise(form)
    torch.testing.assert_close(el.flatten(again), el.flatten(form), rtol=0, atol=1e-9)


@pytest.mark.parametrize("which", ["wf", "random"])
def test_symmetric_copies_map_to_the_same_form(which):
    params = el.target_network() if which == "wf" else [(w[0], b[0]) for w, b in
                                                          random_network(1, 3)]  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    form = el.flatten(el.desymmetrise(params))
    for _ in range(3):
        copy = permute_and_rescale(params, gen)
        assert (el.flatten(copy) - el.flatten(params)).norm() > 1.0
        torch.testing.assert_close(el.flatten(el.desymmetrise(copy)), form, rtol=0, atol=1e-8)


def test_the_global_minimum_is_a_narrow_valley():
    """The documented reason for lr 1e-3: the MSE Hessian's top eigenvalue at W_f is ≈ 1.1e3."""
    form = el.desymmetrise(el.target_network())
    shapes = [(w.shape, b.shape) for w, b in form]
    x = xs()

    def loss(v: torch.Tensor) -> torch.Tensor:
        params, i = [], 0
        for sw, sb in shapes:
            params.append((v[i : i + sw.numel()].view(sw), v[i + sw.numel() : i + sw.numel() +
                                                              sb.numel()]))  # fmt: skip
            i += sw.numel() + sb.numel()
        return (el.network_output(params, x) - f(x)).pow(2).mean()

    top = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, el.flatten(form)))[-1]
    assert 800 < top.item() < 1500
    assert top.item() > 2 * (1 + 0.9) / 1e-2  # lr 1e-2 is unstable at the global minimum


def test_basin_start_is_wf_plus_noise_of_each_replicas_norm():
    wf = el.flatten(el.desymmetrise(el.target_network()))
    model = el.make_model(el.Config(mode="basin", jitter=(0.5, 1.5, 2.0), replicas=3))
    start = el.flatten([(w.detach().double(), b.detach().double()) for w, b in
                        el.model_params(model)])  # fmt: skip
    noise = start - wf
    norms = torch.tensor([0.5, 1.5, 2.0], dtype=torch.float64)
    torch.testing.assert_close(noise.norm(dim=-1), norms, rtol=1e-5, atol=0)
    directions = noise / noise.norm(dim=-1, keepdim=True)
    assert (directions[0] - directions[1]).norm() > 1.0  # each replica its own direction
    alone = el.make_model(el.Config(mode="basin", jitter=1.5, replicas=1, seed=1))
    torch.testing.assert_close(alone.layers[2].weight[0], model.layers[2].weight[1])


def test_basin_without_jitter_stays_at_the_global_minimum():
    out = el.run({"mode": "basin", "jitter": 0.0, "replicas": 2, "steps": 300, "eval_every": 150})
    assert out["train_mse"] < 1e-10
    assert out["returned"] == 1.0 and out["sawtooth_corr"] == pytest.approx(1.0, abs=1e-6)
    assert out["dist_wf"] < 1e-3 and out["init_dist_wf"] < 1e-5


def test_fit_metrics_tell_the_sawtooth_from_a_spline_only_fit():
    x = xs().expand(2, -1, -1)
    y = f(x[0]).expand(2, -1, -1)
    pred = torch.stack([el.network_output(el.target_network(), x[0]), data.spline(x[0])])
    m = el.fit_metrics(pred, x, y, found_mse=1e-3)
    assert m["found_high_freq"].tolist() == [1.0, 0.0]
    assert m["sawtooth_corr"][0].item() == pytest.approx(1.0, abs=1e-9)
    assert abs(m["sawtooth_corr"][1].item()) < 1e-6
    # a spline-only fit leaves the sawtooth's second moment (amplitude² / 3) as its error
    assert m["train_mse"][1].item() == pytest.approx(data.SAW_AMPLITUDE**2 / 3, rel=0.05)


def test_restarts_run_reports_distances_and_other_shapes_skip_them():
    out = el.run({"replicas": 3, "steps": 40, "eval_every": 20, "optimizer": "adadelta",
                  "lr": 1.0})  # fmt: skip
    assert out["diverged"] == 0.0 and out["found_high_freq"] == 0.0
    # per-replica values only: the service takes the best restart from train_mse/rK
    assert "best_train_mse" not in out
    per_replica = [out[f"train_mse/r{r}"] for r in range(3)]
    assert out["train_mse"] == pytest.approx(sum(per_replica) / 3)
    assert len(set(per_replica)) == 3  # each restart its own fit
    assert 5.0 < out["init_dist_wf"] < 30.0 and "dist_wf/r2" in out
    wide = el.run({"replicas": 2, "steps": 20, "eval_every": 20, "width": 8, "depth": 3})
    assert "dist_wf" not in wide and wide["train_mse"] > 0
    declared = {"train_mse", "found_high_freq", "sawtooth_corr"}
    assert set(el.Config(width=8, depth=3).metrics()) == declared
    assert {k for k in wide if "/" not in k and k != "diverged"} == declared
    assert set(el.Config().metrics()) == declared | {"dist_wf", "desym_norm", "init_dist_wf"}


def test_a_diverging_restart_ends_the_trial_with_a_reason():
    out = el.run({"replicas": 2, "steps": 200, "eval_every": 100, "lr": 5.0})
    assert out["diverged"] == 1.0 and "non-finite loss" in out["failure_reason"]


def test_basin_needs_the_5x5_architecture():
    with pytest.raises(ConfigError, match="`depth, width` must be 5, 5 in basin mode"):
        el.Config.from_mapping({"mode": "basin", "width": 6})
    with pytest.raises(ConfigError, match="`jitter` must be >= 0"):
        el.Config.from_mapping({"mode": "basin", "jitter": -0.1})
