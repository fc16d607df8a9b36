"""The Hessian-vector products and the estimators against the exact Hessian
(``torch.autograd.functional.hessian`` + ``eigvalsh``) of a 624-parameter model with BatchNorm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from flatmin.sharpness import SharpnessOptions, measure_sharpness, select_parameters
from flatmin.sharpness.hessian import batch_hessian, hutchinson_trace, subset_hessian, top_eigenvalues
from flatmin.sharpness.measure import fixed_subset_batches, measurement_mode

CPU = torch.device("cpu")


def exact_hessian(model: nn.Module, batches: list[tuple[Tensor, Tensor]], names: list[str]) -> Tensor:
    """The Hessian of the mean cross-entropy over ``batches`` (eval mode) w.r.t. the named parameters."""
    params = {name: p.detach() for name, p in model.named_parameters() if name in names}
    shapes = [p.shape for p in params.values()]
    sizes = [p.numel() for p in params.values()]
    total = sum(len(targets) for _, targets in batches)

    def loss(flat: Tensor) -> Tensor:
        values = {name: part.view(shape) for name, part, shape in zip(params, flat.split(sizes), shapes)}
        return sum(F.cross_entropy(functional_call(model, values, (inputs,)), targets) * len(targets) / total
                   for inputs, targets in batches)

    with measurement_mode(model):
        flat = torch.cat([p.flatten() for p in params.values()])
        return torch.autograd.functional.hessian(loss, flat, vectorize=True).double()


def spectrum(model: nn.Module, batches: list[tuple[Tensor, Tensor]], names: list[str]) -> list[float]:
    """Eigenvalues of the exact Hessian, largest magnitude first (what power iteration finds)."""
    eigenvalues = torch.linalg.eigvalsh(exact_hessian(model, batches, names))
    return eigenvalues[eigenvalues.abs().argsort(descending=True)].tolist()


def names_of(model: nn.Module, params: str) -> list[str]:
    return [name for name, _ in select_parameters(model, params)]


@pytest.mark.parametrize("params", ["all", "conv_and_head"])
def test_hessian_vector_products_are_exact(trained_tiny, params: str):
    model, dataset = trained_tiny
    batches = fixed_subset_batches(dataset, 80, 48, seed=0)
    names = names_of(model, params)
    selected = [p for _, p in select_parameters(model, params)]
    vector = torch.randn(sum(p.numel() for p in selected), generator=torch.Generator().manual_seed(1))
    vectors = list(vector.split([p.numel() for p in selected]))
    vectors = [v.view_as(p) for v, p in zip(vectors, selected)]
    with measurement_mode(model):
        one_batch = batch_hessian(model, F.cross_entropy, *batches[0], selected)(vectors)
        whole_subset = subset_hessian(model, F.cross_entropy, batches, selected, CPU)(vectors)
    for product, hessian in ((one_batch, exact_hessian(model, batches[:1], names)),
                             (whole_subset, exact_hessian(model, batches, names))):
        got = torch.cat([h.flatten() for h in product]).double()
        assert torch.allclose(got, hessian @ vector.double(), rtol=1e-4, atol=1e-6)


def test_trace_and_top_eigenvalues_match_the_exact_hessian(trained_tiny):
    model, dataset = trained_tiny
    (inputs, targets), = fixed_subset_batches(dataset, 64, 64, seed=0)
    params = list(model.parameters())
    exact = spectrum(model, [(inputs, targets)], names_of(model, "all"))
    generator = torch.Generator().manual_seed(0)
    with measurement_mode(model):
        hvp = batch_hessian(model, F.cross_entropy, inputs, targets, params)
        # vᵀHv has a std of about half the trace on this low-rank Hessian: 1,500 vectors put the
        # 5% bar 3.7 standard errors away (tol=0: no early stop).
        trace = hutchinson_trace(hvp, params, max_iter=1500, tol=0.0, generator=generator)
        top3 = top_eigenvalues(hvp, params, top_k=3, max_iter=1000, tol=1e-7, generator=generator)
    assert trace == pytest.approx(sum(exact), rel=0.05)
    assert top3[0] == pytest.approx(exact[0], rel=0.01)
    assert top3 == pytest.approx(exact[:3], rel=0.01)
    assert top3 == sorted(top3, reverse=True)
    assert exact[0] > 2 * exact[2] and exact[2] > 1.2 * abs(exact[3])  # a real order, clear of the rest


@pytest.mark.parametrize("aggregate", ["batch_mean", "subset"])
def test_measure_averages_over_the_subset_as_asked(trained_tiny, aggregate: str):
    model, dataset = trained_tiny
    batches = fixed_subset_batches(dataset, 48, 16, seed=0)
    names = names_of(model, "all")
    per_batch = [spectrum(model, [batch], names) for batch in batches]
    weights = [len(targets) / 48 for _, targets in batches]
    mean_of_batches = sum(w * s[0] for w, s in zip(weights, per_batch))
    of_subset = spectrum(model, batches, names)
    assert abs(mean_of_batches - of_subset[0]) > 0.03 * of_subset[0]  # the two protocols differ here
    expected_trace = sum(of_subset)  # equal for both: the trace is linear
    expected_lambda = mean_of_batches if aggregate == "batch_mean" else of_subset[0]

    options = SharpnessOptions(samples=48, batch_size=16, max_iter=300, tol=0.0, aggregate=aggregate)
    result = measure_sharpness(model, dataset, options, CPU)
    assert (result["samples"], result["batches"], result["parameters"]) == (48, 3, 624)
    assert result["lambda_max"] == pytest.approx(expected_lambda, rel=0.01)
    assert result["trace"] == pytest.approx(expected_trace, rel=0.1)  # 300 vectors: a 10% bar


def test_stopping_rules_stop_early_when_the_estimate_settles():
    matrix = torch.diag(torch.tensor([5.0, 1.0, 0.5, 0.1]))
    calls = []

    def hvp(vectors: list[Tensor]) -> list[Tensor]:
        calls.append(1)
        return [matrix @ vectors[0]]

    params = [torch.zeros(4)]
    assert hutchinson_trace(hvp, params, max_iter=100, tol=1e-3) == pytest.approx(6.6)  # diagonal: exact every time
    assert len(calls) == 2
    calls.clear()
    assert top_eigenvalues(hvp, params, top_k=2, max_iter=500, tol=1e-6) == pytest.approx([5.0, 1.0], rel=1e-4)
    assert len(calls) < 2 * 500
    calls.clear()
    top_eigenvalues(hvp, params, top_k=1, max_iter=7, tol=0.0)
    assert len(calls) == 7
