"""The Hessian's eigenvalue spectral density by stochastic Lanczos quadrature (SLQ; Lin, Saad & Yang,
SIAM Review 2016; Ghorbani, Krishnan & Xiao, ICML 2019), computed and plotted as PyHessian does
(Yao et al., "PyHessian: neural networks through the lens of the Hessian", 2020).

For a unit start vector ``v̂``, ``m`` Lanczos steps give a tridiagonal ``T`` whose eigenvalues
``θⱼ`` (nodes) and squared first eigenvector components ``wⱼ`` (weights) are the Gauss quadrature of
the spectral measure ``Σᵢ (qᵢᵀv̂)² δ(λ − λᵢ)``: ``Σⱼ wⱼ θⱼᵏ = v̂ᵀHᵏv̂`` for ``k < 2m``. The density is
that measure smoothed by Gaussians, averaged over Rademacher start vectors.

Reference: amirgholami/PyHessian @ de8cf23, ``pyhessian/hessian.py`` 175-250 (``density``, with the
weights of PR #23: the first row of the eigenvectors), ``pyhessian/utils.py`` 37-58 and 90-97
(``group_add``, ``normalization``, ``orthnormal``), ``density_plot.py`` 28-71 (``get_esd_plot``,
``density_generate``, ``gaussian``). Where the reference is ambiguous or wrong:

1. ``hessian.py:237,243`` builds ``T`` in the default dtype and uses the general ``torch.linalg.eig``
   (unsorted, complex weights). flatmin: ``T`` in float64, ``torch.linalg.eigh``, nodes ascending.
2. ``utils.py:57`` divides by ``‖v‖ + 1e-6``, so Lanczos vectors fall short of unit length by
   ``1e-6/‖w‖``, and the breakdown branch (``hessian.py:218``, a random restart) fires only on an
   exact ``β = 0``. flatmin follows both.
3. ``density_plot.py:53,64``: ``sigma_squared`` is a variance, widened by ``max(1, λ⁺ − λ⁻)``; the
   density is normalised by a Riemann sum. flatmin follows.

Random numbers come from ``generator`` (PyHessian draws from the global one), as in
:func:`~flatmin.sharpness.hessian.hutchinson_trace`; the breakdown restart draws normals in the
parameters' dtype (PyHessian in the default dtype, which advances the generator differently for
float64 tensors of 16 entries or more).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from flatmin.checks import is_int, is_number
from flatmin.sharpness.hessian import HessianVectorProduct, Vectors, dot

#: What ``normalization`` (``utils.py:57``) adds to the norm it divides by.
NORM_OFFSET = 1e-6


def _normalised(vectors: Vectors) -> Vectors:
    """``v / (‖v‖ + 1e-6)`` (PyHessian's ``normalization``)."""
    norm = math.sqrt(dot(vectors, vectors))
    return [v / (norm + NORM_OFFSET) for v in vectors]


def _orthonormalised(vectors: Vectors, basis: Sequence[Vectors]) -> Vectors:
    """One modified Gram-Schmidt pass against ``basis``, in order, then :func:`_normalised`
    (PyHessian's ``orthnormal``)."""
    for found in basis:
        overlap = dot(vectors, found)
        vectors = [v - overlap * f for v, f in zip(vectors, found)]
    return _normalised(vectors)


def _lanczos(hvp: HessianVectorProduct, params: Sequence[Tensor], iterations: int,
             generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """The nodes (ascending) and weights of one Rademacher start vector."""
    start = [torch.randint(0, 2, p.shape, generator=generator, device=p.device).to(p.dtype) * 2 - 1
             for p in params]
    basis = [_normalised(start)]
    product = list(hvp(basis[0]))
    alphas = [dot(product, basis[0])]
    betas: list[float] = []
    residual = [h - alphas[0] * v for h, v in zip(product, basis[0])]
    for _ in range(1, iterations):
        beta = math.sqrt(dot(residual, residual))
        if beta == 0:  # breakdown: restart from a random vector orthogonal to the basis
            residual = [torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype) for p in params]
        basis.append(_orthonormalised(residual, basis))
        product = list(hvp(basis[-1]))
        alphas.append(dot(product, basis[-1]))
        betas.append(beta)
        residual = [(h - alphas[-1] * v) - beta * u for h, v, u in zip(product, basis[-1], basis[-2])]
    off_diagonal = torch.tensor(betas, dtype=torch.float64)
    tridiagonal = (torch.diag(torch.tensor(alphas, dtype=torch.float64))
                   + torch.diag(off_diagonal, 1) + torch.diag(off_diagonal, -1))
    nodes, vectors = torch.linalg.eigh(tridiagonal)
    return nodes, vectors[0] ** 2


def spectral_density(hvp: HessianVectorProduct, params: Sequence[Tensor], iterations: int = 100,
                     n_vectors: int = 1, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """SLQ nodes and weights of the Hessian ``hvp`` multiplies by (PyHessian's ``density(iter,
    n_v)``): ``iterations`` Lanczos steps with full reorthogonalisation from each of ``n_vectors``
    Rademacher start vectors over ``params``. Returns ``(nodes, weights)``, float64 CPU tensors of
    shape ``(n_vectors, iterations)``, nodes ascending and weights summing to 1 in each row."""
    entries = sum(p.numel() for p in params)
    if not (is_int(iterations) and 1 <= iterations <= entries):
        raise ValueError(f"iterations must be an integer from 1 to the number of entries of params, {entries} "
                         f"(got {iterations!r}).")
    if not (is_int(n_vectors) and n_vectors >= 1):
        raise ValueError(f"n_vectors must be a positive integer (got {n_vectors!r}).")
    runs = [_lanczos(hvp, params, iterations, generator) for _ in range(n_vectors)]
    return torch.stack([nodes for nodes, _ in runs]), torch.stack([weights for _, weights in runs])


def density_curve(nodes: Any, weights: Any, bins: int = 10000, sigma_squared: float = 1e-5,
                  overhead: float = 0.01) -> tuple[Tensor, Tensor]:
    """The SLQ density smoothed by Gaussians of variance ``sigma_squared · max(1, λ⁺ − λ⁻)`` on
    ``bins`` points from ``λ⁻`` to ``λ⁺`` (the runs' mean smallest and largest node, widened by
    ``overhead``), averaged over the runs and normalised to a Riemann sum of 1 (PyHessian's
    ``density_generate``). ``nodes`` and ``weights``: shape ``(runs, m)``, or ``(m,)`` for one run.
    Returns ``(grid, density)``, float64 CPU tensors of shape ``(bins,)``."""
    nodes = torch.as_tensor(nodes).detach().to("cpu", torch.float64).numpy()
    weights = torch.as_tensor(weights).detach().to("cpu", torch.float64).numpy()
    if nodes.shape != weights.shape or nodes.ndim not in (1, 2) or 0 in nodes.shape:
        raise ValueError(f"nodes and weights must have one shape, (runs, m) or (m,) with m >= 1 "
                         f"(got {tuple(nodes.shape)} and {tuple(weights.shape)}).")
    if not (is_int(bins) and bins >= 2):
        raise ValueError(f"bins must be an integer >= 2 (got {bins!r}).")
    if not (is_number(sigma_squared) and sigma_squared > 0):
        raise ValueError(f"sigma_squared must be a number > 0 (got {sigma_squared!r}).")
    if not (is_number(overhead) and overhead > 0):
        raise ValueError(f"overhead must be a number > 0 (got {overhead!r}).")
    nodes, weights = np.atleast_2d(nodes), np.atleast_2d(weights)
    upper = np.mean(np.max(nodes, axis=1)) + overhead
    lower = np.mean(np.min(nodes, axis=1)) - overhead
    grid = np.linspace(lower, upper, num=bins)
    variance = sigma_squared * max(1, upper - lower)
    runs = [np.sum(np.exp(-(grid[:, None] - row) ** 2 / (2.0 * variance)) / np.sqrt(2 * np.pi * variance) * mass,
                   axis=1)
            for row, mass in zip(nodes, weights)]
    density = np.mean(runs, axis=0)
    density = density / (np.sum(density) * (grid[1] - grid[0]))
    return torch.from_numpy(grid), torch.from_numpy(density)
