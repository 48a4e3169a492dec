"""energy_landscape (paper 002): W_f, the data, the de-symmetrisation, the basin start, how a fit
is read (teeth, collapse), the Hessian spectrum and the statistics over restarts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables import energy_landscape as el
from trainables import hessian
from trainables import sawtooth_net as net
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


def random_network(replicas: int, seed: int, scale: float = 1.0) -> net.Params:
    model = ReplicaMLP([1, 5, 5, 5, 5, 5, 1], replica_generators(range(seed, seed + replicas), "t"))
    return [(w.detach().double() * scale, b.detach().double() * scale) for w, b in
            net.model_params(model)]  # fmt: skip


def permute_and_rescale(params: net.Params, gen: torch.Generator) -> net.Params:
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
    wf = net.target_network()
    assert net.flatten(wf).shape == (136,)  # the paper's 136-dimensional weight space
    x = xs()
    out = net.network_output(wf, x)
    assert (out - f(x)).pow(2).mean().item() < 1e-28
    # the data module's closed forms are what W_f computes
    torch.testing.assert_close(out, data.sawtooth(x) + data.spline(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(data.target(x), data.sawtooth(x) + data.spline(x), rtol=0, atol=0)
    # the left two columns alone give the sawtooth, the right three the spline
    left = [(w.clone(), b.clone()) for w, b in wf]
    right = [(w.clone(), b.clone()) for w, b in wf]
    left[-1][0][2:], left[-1][1][:], right[-1][0][:2] = 0.0, 0.0, 0.0
    saw = net.network_output(left, x)
    torch.testing.assert_close(saw, data.sawtooth(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(net.network_output(right, x), data.spline(x), rtol=0, atol=1e-12)
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
    wf = net.network_output(net.target_network(), x[:, None])
    torch.testing.assert_close(split.y[0].double(), wf, rtol=0, atol=1e-6)
    assert data.sawtooth_splits(3)["train"].x.equal(split.x)


@pytest.mark.parametrize("which", ["wf", "random", "large"])
def test_desymmetrisation_keeps_the_function_is_balanced_and_idempotent(which):
    params = {
        "wf": lambda: net.target_network(),
        "random": lambda: random_network(4, 0),
        "large": lambda: random_network(4, 7, scale=3.0),
    }[which]()
    x = torch.linspace(-0.5, 1.5, 401, dtype=torch.float64)[:, None]
    form = net.desymmetrise(params)
    torch.testing.assert_close(
        net.network_output(form, x), net.network_output(params, x), rtol=0, atol=1e-10
    )
    assert (net.flatten(form).norm(dim=-1) <= net.flatten(params).norm(dim=-1) + 1e-12).all()
    for (w, b), (w_next, _) in zip(form[:-1], form[1:]):  # the minimum: in-norm = out-norm
        incoming = w.pow(2).sum(-2) + b.pow(2)
        torch.testing.assert_close(incoming, w_next.pow(2).sum(-1), rtol=1e-6, atol=1e-12)
        assert (torch.diff(w.norm(dim=-2), dim=-1) >= 0).all()  # sorted by column norm
    again = net.desymmetrise(form)
    torch.testing.assert_close(net.flatten(again), net.flatten(form), rtol=0, atol=1e-9)


@pytest.mark.parametrize("which", ["wf", "random"])
def test_symmetric_copies_map_to_the_same_form(which):
    params = net.target_network() if which == "wf" else [(w[0], b[0]) for w, b in
                                                          random_network(1, 3)]  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    form = net.flatten(net.desymmetrise(params))
    for _ in range(3):
        copy = permute_and_rescale(params, gen)
        assert (net.flatten(copy) - net.flatten(params)).norm() > 1.0
        torch.testing.assert_close(net.flatten(net.desymmetrise(copy)), form, rtol=0, atol=1e-8)


def wf_model(replicas: int = 1) -> ReplicaMLP:
    return el.make_model(el.Config(mode="basin", jitter=0.0, replicas=replicas))


def test_the_global_minimum_is_a_narrow_valley():
    """The documented reason for lr 1e-3: the MSE Hessian's top eigenvalue at the de-symmetrised
    W_f is ≈ 1.1e3, and W_f (a perfect fit) is a minimum: no negative curvature, no gradient."""
    got = el.curvature(wf_model(), el.make_data(el.Config(replicas=1)))
    assert 1.05e3 < got["hess_max"].item() < 1.15e3
    assert got["hess_max"].item() > 2 * (1 + 0.9) / 1e-2  # lr 1e-2: unstable at the minimum
    # the float32-rounded W_f's residual (MSE ~1e-12) leaves λ_min ≈ −1e-5: inside the tolerance
    assert got["hess_neg"].item() == 0
    assert got["hess_min"].item() > -hessian.NEG_RTOL * got["hess_max"].item()
    assert got["grad_norm"].item() < 1e-4  # W_f's weights rounded to float32 (MSE ~1e-12)


def test_hessians_are_exact_for_a_quadratic_and_match_finite_differences():
    # least squares y ≈ w·x + b: H = 2·[[E x², E x], [E x, 1]], one per replica's own x
    x = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 4.0]], dtype=torch.float64)

    def lsq(v, x):
        return (v[0] * x + v[1] - 1.0).pow(2).mean()

    h = hessian.hessians(lsq, torch.zeros(2, 2), x)
    for r in range(2):
        want = 2 * torch.tensor([[x[r].pow(2).mean(), x[r].mean()], [x[r].mean(), 1.0]])
        torch.testing.assert_close(h[r], want.double(), rtol=1e-12, atol=1e-12)
    # a small ReLU net's train MSE: the exact Hessian against central differences of its gradient
    params = random_network(1, 5)
    one = [(w[0], b[0]) for w, b in params]
    inputs, targets = xs(), f(xs())

    def loss(v, x, y):
        return (net.network_output(net.unflatten(v, one), x) - y).pow(2).mean()

    v = net.flatten(params)[0]
    h = hessian.hessians(loss, v[None], inputs[None], targets[None])[0]
    step, cols = 1e-6, [0, 17, 60, 135]
    for i in cols:
        e = torch.zeros_like(v)
        e[i] = step
        grads = [torch.func.grad(loss)(v + s * e, inputs, targets) for s in (1, -1)]
        central = (grads[0] - grads[1]) / (2 * step)
        torch.testing.assert_close(h[:, i], central, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(h, h.T, rtol=0, atol=1e-10)


def test_spectrum_counts_negative_eigenvalues_beyond_the_tolerance():
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64, generator=gen))
    eig = torch.tensor([-1.0, -1e-9, 0.0, 2.0], dtype=torch.float64)
    got = hessian.spectrum_metrics((q @ torch.diag(eig) @ q.T)[None])
    assert got["hess_min"].item() == pytest.approx(-1.0)
    assert got["hess_max"].item() == pytest.approx(2.0)
    assert got["hess_neg"].item() == 1  # −1e-9 is within 1e-6 of the largest modulus: a zero


def test_basin_start_is_wf_plus_noise_of_each_replicas_norm():
    wf = net.flatten(net.desymmetrise(net.target_network()))
    model = el.make_model(el.Config(mode="basin", jitter=(0.5, 1.5, 2.0), replicas=3))
    start = net.flatten([(w.detach().double(), b.detach().double()) for w, b in
                        net.model_params(model)])  # fmt: skip
    noise = start - wf
    norms = torch.tensor([0.5, 1.5, 2.0], dtype=torch.float64)
    torch.testing.assert_close(noise.norm(dim=-1), norms, rtol=1e-5, atol=0)
    directions = noise / noise.norm(dim=-1, keepdim=True)
    assert (directions[0] - directions[1]).norm() > 1.0  # each replica its own direction
    alone = el.make_model(el.Config(mode="basin", jitter=1.5, replicas=1, seed=1))
    torch.testing.assert_close(alone.layers[2].weight[0], model.layers[2].weight[1])


def test_basin_without_jitter_stays_at_the_global_minimum():
    out = el.run({"mode": "basin", "jitter": 0.0, "replicas": 2, "steps": 300, "eval_every": 150})
    assert out["train_mse"] < 1e-10 and out["teeth"] == 16
    assert out["returned"] == 1.0 and out["sawtooth_corr"] == pytest.approx(1.0, abs=1e-6)
    assert out["dist_wf"] < 1e-3 and out["init_dist_wf"] < 1e-5
    assert out["hess_neg"] == 0 and 1.05e3 < out["hess_max"] < 1.15e3


def test_adadelta_with_kerass_defaults_also_leaves_an_exact_start():
    """At a minimum Adadelta's step tends to lr·g (Zeiler §4.3: √(d+ε)/√(a+ε) → 1 as g → 0), and
    lr 1.0 is far above GD's stable 2/λ ≈ 1.8e-3 at W_f: it leaves, as the paper's never returns."""
    base = {"mode": "basin", "jitter": 0.0, "replicas": 1, "steps": 400, "eval_every": 400}
    keras = el.run({**base, "optimizer": "adadelta_keras", "lr": 1.0})
    assert keras["train_mse"] > 1e-6 and keras["dist_wf"] > 1e-3
    assert el.run({**base, "optimizer": "sgd"})["train_mse"] < 1e-10


def test_basin_plots_return_fraction_against_jitter():
    jitter = (0.0, 0.0, 1.5, 1.5)
    out = el.run({"mode": "basin", "jitter": jitter, "replicas": 4, "steps": 300,
                  "eval_every": 300})  # fmt: skip
    curves = {s["label"]: s for s in out["artifacts"]["basin_return"]["series"]}
    assert curves["returned"]["x"] == [0.0, 1.5]
    assert curves["returned"]["y"][0] == 1.0  # an exact start stays
    returned = [out[f"returned/r{r}"] for r in range(4)]
    assert curves["returned"]["y"][1] == pytest.approx((returned[2] + returned[3]) / 2)
    assert curves["teeth kept / 16"]["y"][0] == 1.0
    loss = out["artifacts"]["basin_loss"]["series"][0]
    assert loss["x"] == list(jitter) and loss["y"][0] < -10  # log10 of W_f's float32 MSE


def test_fit_metrics_tell_the_sawtooth_from_a_spline_only_fit():
    x = xs()
    one_missing = f(x).clone()
    tooth3 = data.tooth_index(x) == 3
    one_missing[tooth3] = (data.spline(x) + data.SAW_AMPLITUDE / 2)[tooth3]  # tooth 3 flattened
    pred = torch.stack([net.network_output(net.target_network(), x), data.spline(x), one_missing,
                        torch.full_like(x, 0.3)])  # fmt: skip
    m = el.fit_metrics(pred, x.expand(4, -1, -1), f(x).expand(4, -1, -1), tooth_tol=0.5)
    assert m["teeth"].tolist() == [16, 0, 15, 0]
    assert m["found_high_freq"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert m["collapsed"].tolist() == [0.0, 0.0, 0.0, 1.0]
    errors = data.tooth_errors(pred, x.expand(4, -1, -1))
    assert errors[0].max().item() < 1e-20  # W_f is f
    assert errors[2, 3].item() == pytest.approx(1.0, abs=0.01)  # leaving a tooth out: its variance
    assert errors[2, torch.arange(16) != 3].max().item() < 1e-20
    assert m["sawtooth_corr"][0].item() == pytest.approx(1.0, abs=1e-9)
    assert abs(m["sawtooth_corr"][1].item()) < 1e-6
    # a spline-only fit leaves the sawtooth's second moment (amplitude² / 3) as its error; the best
    # fit without teeth (spline + the sawtooth's mean) leaves its variance, amplitude² / 12
    assert m["train_mse"][1].item() == pytest.approx(data.SAW_AMPLITUDE**2 / 3, rel=0.05)
    no_teeth = data.spline(x) + data.SAW_AMPLITUDE / 2
    floor = el.fit_metrics(no_teeth[None], x[None], f(x)[None], tooth_tol=0.5)["train_mse"]
    assert floor.item() == pytest.approx(data.SAW_AMPLITUDE**2 / 12, rel=0.05)
    # one missing tooth costs a 16th of that: the scale of the old MSE cut-off (1e-3)
    assert m["train_mse"][2].item() == pytest.approx(floor.item() / 16, rel=0.05)


def test_quantiles_are_over_the_replicas_with_the_same_hyperparameters():
    cfg = el.Config(replicas=5, lr=(1e-3, 1e-3, 2e-3, 1e-3, 2e-3), seed=(4, 5, 6, 7, 8))
    groups = el.peer_groups(cfg)
    assert groups.tolist() == [0, 0, 1, 0, 1]  # seeds differ, lr decides
    values = torch.tensor([1.0, 2.0, 10.0, 3.0, float("nan")])
    q = el.pooled_quantiles(values, groups, "train_mse")
    assert q["train_mse_median"].tolist() == [2.0, 2.0, 10.0, 2.0, 10.0]  # a NaN is left out
    assert q["train_mse_q10"][0].item() == pytest.approx(1.2)  # linear between order statistics
    assert q["train_mse_q90"][0].item() == pytest.approx(2.8)
    # a pack's second configuration plots its own restarts only
    cfg = el.Config(replicas=3, lr=(1e-3, 1e-3, 2e-3))
    task = el.make_task(cfg)
    final = task.evaluate(task.model, task.data)
    fits = el.plots(task.model, task.data, final, 2, cfg=cfg)["restart_fits"]
    assert fits["title"].startswith("1 restarts")
    mean = next(s for s in fits["series"] if s["label"] == "mean fit")["y"]
    with torch.no_grad():
        alone = task.model(task.data["train"].x)[2, :, 0].double()
    torch.testing.assert_close(torch.tensor(mean, dtype=torch.float64), alone, atol=1e-6, rtol=0)
    basin = el.Config(mode="basin", replicas=4, jitter=(0.0, 0.5, 0.0, 0.5))
    assert el.peer_groups(basin).tolist() == [0, 1, 0, 1]
    assert el.peers(basin, 1, besides=("seed", "jitter")).tolist() == [0, 1, 2, 3]


def test_restarts_run_reports_distances_and_other_shapes_skip_them():
    out = el.run({"replicas": 3, "steps": 40, "eval_every": 20, "optimizer": "adadelta",
                  "lr": 1.0})  # fmt: skip
    assert out["diverged"] == 0.0 and out["found_high_freq"] == 0.0
    per_replica = [out[f"train_mse/r{r}"] for r in range(3)]
    assert out["train_mse"] == pytest.approx(sum(per_replica) / 3)
    assert len(set(per_replica)) == 3  # each restart its own fit
    # the statistics over restarts: one number for the trial, repeated for each replica
    assert out["train_mse_median"] == pytest.approx(sorted(per_replica)[1])
    assert out["train_mse_q10"] <= out["train_mse_median"] <= out["train_mse_q90"]
    assert out["train_mse_median/r2"] == out["train_mse_median"]
    dists = sorted(out[f"dist_wf/r{r}"] for r in range(3))
    assert out["dist_wf_median"] == pytest.approx(dists[1])
    assert 5.0 < out["init_dist_wf"] < 30.0 and "dist_wf/r2" in out
    assert out["hess_max"] > 0 and out["hess_min"] <= out["hess_max"]
    fits = out["artifacts"]["restart_fits"]
    labels = {s["label"]: s for s in fits["series"]}
    assert set(labels) == {"f", "mean fit", "mean ± std", "mean − std", "best fit"}
    assert len(labels["f"]["x"]) == 321
    wide = el.run({"replicas": 2, "steps": 20, "eval_every": 20, "width": 8, "depth": 3})
    assert "dist_wf" not in wide and wide["train_mse"] > 0 and wide["hess_max"] > 0
    declared = {"train_mse", "found_high_freq", "teeth", "sawtooth_corr", "collapsed",
                "train_mse_q10", "train_mse_median", "train_mse_q90", "hess_min", "hess_max",
                "hess_neg", "grad_norm"}  # fmt: skip
    assert set(el.Config(width=8, depth=3).metrics()) == declared
    assert {k for k in wide if "/" not in k and k not in ("diverged", "artifacts")} == declared
    distances = {"dist_wf", "desym_norm", "init_dist_wf", "dist_wf_q10", "dist_wf_median",
                 "dist_wf_q90"}  # fmt: skip
    assert set(el.Config().metrics()) == declared | distances
    basin = set(el.Config(mode="basin").metrics())
    assert basin == declared - {"train_mse_q10", "train_mse_median", "train_mse_q90"} | {
        "dist_wf", "desym_norm", "init_dist_wf", "returned"}  # fmt: skip


def test_a_diverging_restart_ends_the_trial_with_a_reason():
    out = el.run({"replicas": 2, "steps": 200, "eval_every": 100, "lr": 5.0})
    assert out["diverged"] == 1.0 and "non-finite loss" in out["failure_reason"]


def test_basin_needs_the_5x5_architecture():
    with pytest.raises(ConfigError, match="`depth, width` must be 5, 5 in basin mode"):
        el.Config.from_mapping({"mode": "basin", "width": 6})
    with pytest.raises(ConfigError, match="`jitter` must be >= 0"):
        el.Config.from_mapping({"mode": "basin", "jitter": -0.1})
    with pytest.raises(ConfigError, match=r"`tooth_tol` must be in \(0, 1\), but got 1.0"):
        el.Config.from_mapping({"tooth_tol": 1.0})
