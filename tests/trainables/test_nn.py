"""The σ-normalised layer and the replica-batched MLP."""

from __future__ import annotations

import math

import pytest
import torch

from trainables.nn import ReplicaLinear, ReplicaMLP, replica_generators


def gens(n: int, stream: str = "init") -> list[torch.Generator]:
    return replica_generators(list(range(n)), stream)


@pytest.mark.parametrize("n_in,n_out,sigma_inv", [(1, 1000, 0.5), (64, 32, 2.0), (10, 1, 7.0)])
def test_effective_weight_std_is_sigma_over_sqrt_fan_in(n_in: int, n_out: int, sigma_inv: float):
    layer = ReplicaLinear(n_in, n_out, gens(3), sigma=torch.full((3,), 1 / sigma_inv))
    with torch.no_grad():  # move the raw weights far from their init: the invariant must still hold
        layer.weight.mul_(torch.tensor([0.01, 1.0, 50.0]).view(3, 1, 1)).add_(3.0)
    std = layer.effective_weight().std(dim=(1, 2), correction=0)
    torch.testing.assert_close(std, torch.full((3,), (1 / sigma_inv) / math.sqrt(n_in)))


def test_std_holds_throughout_training():
    model = ReplicaMLP([1, 200, 1], gens(2), sigma_inv=0.25)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x = torch.linspace(-3, 3, 50).view(1, 50, 1).expand(2, 50, 1)
    for _ in range(100):
        opt.zero_grad()
        model(x).sub(torch.sin(x)).pow(2).mean().backward()
        opt.step()
    for layer in model.layers:
        expected = 4.0 / math.sqrt(layer.n_in)
        got = layer.effective_weight().std(dim=(1, 2), correction=0)
        torch.testing.assert_close(got, torch.full((2,), expected))


def test_bias_norm_follows_the_papers_code():
    model = ReplicaMLP([3, 40, 1], gens(2), sigma_inv=0.5)
    hidden, out = model.layers
    b = hidden.effective_bias()
    torch.testing.assert_close(b.std(dim=1, correction=0), torch.full((2,), 2.0 / math.sqrt(3)))
    torch.testing.assert_close(out.effective_bias(), out.bias * 2.0)


def test_hand_built_network_exact_output():
    """A plain 2-2-1 tanh net with set weights gives the value computed by hand."""
    model = ReplicaMLP([2, 2, 1], gens(1), activation="tanh")
    hidden, out = model.layers
    with torch.no_grad():
        hidden.weight.copy_(torch.tensor([[[1.0, -1.0], [2.0, 0.5]]]))
        hidden.bias.copy_(torch.tensor([[0.1, -0.2]]))
        out.weight.copy_(torch.tensor([[[3.0], [-1.0]]]))
        out.bias.copy_(torch.tensor([[0.5]]))
    x = torch.tensor([[[0.3, -0.4]]])
    h1 = math.tanh(0.3 * 1.0 + -0.4 * 2.0 + 0.1)
    h2 = math.tanh(0.3 * -1.0 + -0.4 * 0.5 - 0.2)
    assert model(x).item() == pytest.approx(3.0 * h1 - h2 + 0.5, abs=1e-6)


def test_replica_init_does_not_depend_on_the_other_replicas():
    together = ReplicaMLP([1, 8, 1], replica_generators([5, 6, 7], "init"), sigma_inv=1.0)
    alone = ReplicaMLP([1, 8, 1], replica_generators([6], "init"), sigma_inv=1.0)
    for a, b in zip(together.parameters(), alone.parameters()):
        torch.testing.assert_close(a[1:2], b)


def test_residual_adds_skip_between_equal_layers():
    model = ReplicaMLP([2, 5, 5, 1], gens(1), activation="relu", residual=True)
    x = torch.randn(1, 4, 2)
    h1 = torch.relu(model.layers[0](x))
    h2 = h1 + torch.relu(model.layers[1](h1))
    torch.testing.assert_close(model(x), model.layers[2](h2))


@pytest.mark.parametrize(
    "n_in,n_out,batch", [(1, 7, 5), (2, 9, 5), (30, 1, 5), (30, 8, 5), (3, 4, 400_000)]
)
def test_every_forward_path_equals_a_plain_matmul(n_in, n_out, batch):
    """Broadcast fast paths (tiny fan-in, single output) and baddbmm agree with x @ W + b."""
    layer = ReplicaLinear(n_in, n_out, gens(2))
    x = torch.randn(2, batch, n_in)
    expected = torch.stack([x[r] @ layer.weight[r] + layer.bias[r] for r in range(2)])
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("width, replicas", [(16, 3), (1000, 2)])
def test_the_fused_1d_tanh_net_equals_autograd_in_value_gradient_and_trajectory(width, replicas):
    """`_TanhNet1D`'s hand-written backward against autograd through the plain layers: the same
    output and parameter gradients, and the same weights after 50 Adam steps (σ-normalised)."""

    def trained(fused: bool) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        model = ReplicaMLP([1, width, 1], replica_generators(range(replicas), "init"),
                           sigma_inv=[0.5, 2.0][:replicas] + [1.0] * (replicas - 2))  # fmt: skip
        model.fused = fused
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(replicas, 40, 1, generator=gen) * 3
        y = torch.sin(x)
        out = model(x)
        ((out - y) ** 2).mean(dim=(1, 2)).sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(50):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean(dim=(1, 2)).sum().backward()
            opt.step()
        return out.detach(), grads, [p.detach().clone() for p in model.parameters()]

    (out_f, grad_f, end_f), (out_a, grad_a, end_a) = trained(True), trained(False)
    torch.testing.assert_close(out_f, out_a, rtol=1e-5, atol=1e-6)
    for f, a in zip(grad_f + end_f, grad_a + end_a):
        torch.testing.assert_close(f, a, rtol=1e-5, atol=1e-5 * a.abs().max().item())


def test_an_input_gradient_takes_autograd_s_path():
    model = ReplicaMLP([1, 8, 1], replica_generators([0], "init"), sigma_inv=1.0)
    x = torch.linspace(-1, 1, 5).view(1, 5, 1).requires_grad_()
    model(x).sum().backward()
    model.fused = False
    x2 = x.detach().clone().requires_grad_()
    model(x2).sum().backward()
    assert model.layers[0].n_in == 1 and torch.equal(x.grad, x2.grad)
