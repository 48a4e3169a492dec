"""The Bell polynomial B6 and its scrambled counterparts B̃6 (paper 003 B), on U[0, 2]^6 inputs.

A polynomial is a sequence of monomials (coefficient, exponents of x1, …, x6). `B6` is the sixth
complete Bell polynomial, with the paper's printed typo corrected; `scrambled_monomials(seed)` is
B̃6, each monomial of B6 with its variables permuted by the paper's rules. Both are pure functions
of their arguments: a scramble depends on its seed only. `trainables.bell_polynomial` documents
the choices (the typo, how we read the scramble's rules).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from trainables.data import uniform

Polynomial = Literal["bell", "scrambled"]
Monomial = tuple[float, tuple[int, ...]]  # (coefficient, exponents of x1, …, x6)
VARIABLES = 6
INPUT_HIGH = 2.0  # inputs are U[0, INPUT_HIGH]^6

# B6 written out, in the paper's order (with its x3² typo corrected to x2³).
B6: tuple[Monomial, ...] = (
    (1.0, (6, 0, 0, 0, 0, 0)),  # x1⁶
    (15.0, (4, 1, 0, 0, 0, 0)),  # 15 x2 x1⁴
    (20.0, (3, 0, 1, 0, 0, 0)),  # 20 x3 x1³
    (45.0, (2, 2, 0, 0, 0, 0)),  # 45 x2² x1²
    (15.0, (0, 3, 0, 0, 0, 0)),  # 15 x2³  (printed as 15 x3² in the paper)
    (60.0, (1, 1, 1, 0, 0, 0)),  # 60 x3 x2 x1
    (15.0, (2, 0, 0, 1, 0, 0)),  # 15 x4 x1²
    (10.0, (0, 0, 2, 0, 0, 0)),  # 10 x3²
    (15.0, (0, 1, 0, 1, 0, 0)),  # 15 x4 x2
    (6.0, (1, 0, 0, 0, 1, 0)),  # 6 x5 x1
    (1.0, (0, 0, 0, 0, 0, 1)),  # x6
)


def permute_monomial(monomial: Monomial, sigma: Sequence[int]) -> Monomial:
    """Replace x_j by x_σ(j) (0-based indices): the exponent of x_j moves to x_σ(j)."""
    coeff, exps = monomial
    new = [0] * len(exps)
    for j, e in enumerate(exps):
        new[sigma[j]] += e
    return coeff, tuple(new)


def scramble_permutations(seed: int, monomials: Sequence[Monomial] = B6) -> list[tuple[int, ...]]:
    """σ_i for each monomial, drawn by rejection so that B̃6 obeys the paper's three rules.

    Per monomial: every variable in it moves (σ(j) ≠ j), the monomial changes, σ differs from the
    earlier σs and the new monomial from the earlier new monomials. A draw that leaves a variable
    unused starts over (from the same random stream, so the result depends only on the seed).
    """
    rng = random.Random(seed)
    for _ in range(1000):
        sigmas: list[tuple[int, ...]] = []
        seen: set[tuple[int, ...]] = set()
        for coeff, exps in monomials:
            support = [j for j, e in enumerate(exps) if e]
            for _ in range(10_000):
                sigma = tuple(rng.sample(range(VARIABLES), VARIABLES))
                new = permute_monomial((coeff, exps), sigma)[1]
                moved = all(sigma[j] != j for j in support) and new != exps
                if moved and sigma not in sigmas and new not in seen:
                    break
            else:
                raise RuntimeError(f"no valid permutation for monomial {exps}")
            sigmas.append(sigma)
            seen.add(new)
        used = {j for exps in seen for j, e in enumerate(exps) if e}
        if len(used) == VARIABLES:
            return sigmas
    raise RuntimeError(f"no scramble using all {VARIABLES} variables for seed {seed}")


def scrambled_monomials(seed: int) -> list[Monomial]:
    """B̃6: each monomial of B6 with its own permutation of the variables."""
    return [permute_monomial(m, s) for m, s in zip(B6, scramble_permutations(seed))]


def monomials_for(polynomial: Polynomial, scramble_seed: int = 0) -> list[Monomial]:
    return list(B6) if polynomial == "bell" else scrambled_monomials(scramble_seed)


def evaluate_polynomial(monomials: Sequence[Monomial], x: Tensor) -> Tensor:
    """Σ c · Π_j x_j^e_j for x [..., 6]: y [..., 1], computed in float64, returned in x's dtype."""
    coeffs = torch.tensor([c for c, _ in monomials], dtype=torch.float64, device=x.device)
    exps = torch.tensor([e for _, e in monomials], dtype=torch.float64, device=x.device)
    terms = x.double().unsqueeze(-2).pow(exps).prod(dim=-1)  # [..., M]; 0⁰ = 1
    return (terms @ coeffs).unsqueeze(-1).to(x.dtype)


def inputs(gen: torch.Generator, n: int) -> Tensor:
    """n points [n, 6] uniform on [0, 2]^6."""
    return uniform(gen, n, VARIABLES, INPUT_HIGH)


def sample(gen: torch.Generator, n: int, monomials: Sequence[Monomial]) -> tuple[Tensor, Tensor]:
    """One replica's labelled points: x [n, 6] from U[0, 2]^6, y [n, 1] the polynomial at x (a
    `Sampler` once the monomials are bound)."""
    x = inputs(gen, n)
    return x, evaluate_polynomial(monomials, x)
