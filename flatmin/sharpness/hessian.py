"""Hessian-vector products and the two estimators built on them: Hutchinson's trace and the top
eigenvalues by power iteration with deflation.

The Hessian ``H`` of the loss is never formed: ``Hv = d(g·v)/dθ`` by double backpropagation
(Pearlmutter, 1994), with ``g = dL/dθ`` built with ``create_graph=True``. The estimators follow
PyHessian (Yao et al., 2020), including its stopping rules, so their output is comparable with
the NSO release's, which uses the same code.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

Vectors = list[Tensor]
HessianVectorProduct = Callable[[Vectors], Vectors]
LossFn = Callable[[Tensor, Tensor], Tensor]


def dot(a: Vectors, b: Vectors) -> float:
    """``Σ aᵢ·bᵢ`` over a list of parameter-shaped tensors."""
    return sum(torch.sum(x * y) for x, y in zip(a, b)).item()


def orthonormalised(vectors: Vectors, basis: Sequence[Vectors] = ()) -> Vectors:
    """``vectors`` made orthogonal to each (unit) element of ``basis`` (Gram-Schmidt), then of unit norm."""
    for found in basis:
        overlap = dot(vectors, found)
        vectors = [v - overlap * f for v, f in zip(vectors, found)]
    norm = dot(vectors, vectors) ** 0.5
    return [v / (norm + 1e-12) for v in vectors]


def to_device(inputs: Any, device: torch.device) -> Any:
    """A batch's inputs, a tensor or a mapping of tensors (tokenised text), moved to ``device``."""
    if isinstance(inputs, Tensor):
        return inputs.to(device)
    return {key: value.to(device) for key, value in inputs.items()}


def batch_hessian(model: nn.Module, loss_fn: LossFn, inputs: Any, targets: Tensor,
                  params: Sequence[Tensor]) -> HessianVectorProduct:
    """``v ↦ Hv`` for the loss of one batch: the gradient graph is built once and kept, so each
    product costs one extra backward pass. ``.grad`` is not touched."""
    loss = loss_fn(model(inputs), targets)
    gradients = torch.autograd.grad(loss, params, create_graph=True)

    def product(vectors: Vectors) -> Vectors:
        return [h.detach() for h in torch.autograd.grad(gradients, params, grad_outputs=vectors,
                                                       retain_graph=True)]

    return product


def subset_hessian(model: nn.Module, loss_fn: LossFn, batches: Sequence[tuple[Any, Tensor]],
                   params: Sequence[Tensor], device: torch.device) -> HessianVectorProduct:
    """``v ↦ Hv`` for the mean loss over all ``batches`` (each weighted by its size), PyHessian's
    full-dataset mode: every product rebuilds each batch's graph, so memory stays that of one batch."""
    total = sum(len(targets) for _, targets in batches)

    def product(vectors: Vectors) -> Vectors:
        result = [torch.zeros_like(v) for v in vectors]
        for inputs, targets in batches:
            batch = batch_hessian(model, loss_fn, to_device(inputs, device), targets.to(device), params)
            torch._foreach_add_(result, batch(vectors), alpha=len(targets) / total)
        return result

    return product


def hutchinson_trace(hvp: HessianVectorProduct, params: Sequence[Tensor], max_iter: int = 100,
                     tol: float = 1e-3, generator: torch.Generator | None = None) -> float:
    """Hutchinson's estimate of ``tr H`` (Hutchinson, 1989): the mean of ``vᵀHv`` over Rademacher
    vectors ``v`` (``E[vᵀHv] = tr H``), stopped after ``max_iter`` vectors or when the running mean
    moves by less than ``tol`` relative to its previous value (PyHessian's rule)."""
    total, mean = 0.0, 0.0
    for iteration in range(1, max_iter + 1):
        vectors = [torch.randint(0, 2, p.shape, generator=generator, device=p.device).to(p.dtype) * 2 - 1
                   for p in params]
        total += dot(hvp(vectors), vectors)
        previous, mean = mean, total / iteration
        if iteration > 1 and abs(mean - previous) / (abs(previous) + 1e-6) < tol:
            break
    return mean


def top_eigenvalues(hvp: HessianVectorProduct, params: Sequence[Tensor], top_k: int = 1, max_iter: int = 100,
                    tol: float = 1e-3, generator: torch.Generator | None = None) -> list[float]:
    """The ``top_k`` eigenvalues of largest magnitude, largest first, by power iteration with
    deflation (PyHessian): each eigenvector is searched orthogonally to those found before, and each
    search stops after ``max_iter`` products or when the Rayleigh quotient ``vᵀHv`` moves by less
    than ``tol`` relative to its previous value.

    Power iteration converges to the largest |λ|. Near a minimum those are the largest positive
    eigenvalues (what PyHessian and the NSO release report as λ_max); a negative value in the
    output says the point is not near a minimum.
    """
    eigenvalues: list[float] = []
    eigenvectors: list[Vectors] = []
    for _ in range(top_k):
        vectors = orthonormalised([torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype)
                                   for p in params], eigenvectors)
        eigenvalue: float | None = None
        for _ in range(max_iter):
            product = hvp(vectors)
            rayleigh = dot(product, vectors)
            vectors = orthonormalised(product, eigenvectors)  # deflation: stay clear of those found
            converged = eigenvalue is not None and abs(rayleigh - eigenvalue) / (abs(eigenvalue) + 1e-6) < tol
            eigenvalue = rayleigh
            if converged:
                break
        eigenvalues.append(eigenvalue)
        eigenvectors.append(vectors)
    return eigenvalues
