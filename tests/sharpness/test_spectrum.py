"""Stochastic Lanczos quadrature and the smoothed spectral density (``flatmin.sharpness.spectrum``)
against float64 restatements of PyHessian @ de8cf23 (``pyhessian/hessian.py`` ``density`` 175-250
and ``dataloader_hv_product`` 63-91, ``pyhessian/utils.py`` 27-58 and 75-97, ``density_plot.py``
``density_generate`` and ``gaussian`` 40-71) and against the dense Hessian
(``torch.autograd.functional.hessian`` + ``torch.linalg.eigh``). The restatements were checked against
PyHessian itself (default dtype float64, its global generator): the same draws and generator state, nodes
within 6e-15 (``eig`` against ``eigh``), ``density_generate`` equal bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from flatmin.sharpness.hessian import batch_hessian, subset_hessian
from flatmin.sharpness.measure import measurement_mode
from flatmin.sharpness.plots import plot_density
from flatmin.sharpness.spectrum import density_curve, spectral_density
from tests.sharpness.nets import ConvNet

CPU = torch.device("cpu")


# ---- PyHessian, restated in float64 ------------------------------------------------------------------

def group_product(xs, ys):
    return sum([torch.sum(x * y) for (x, y) in zip(xs, ys)])


def group_add(params, update, alpha=1):
    for i, p in enumerate(params):
        params[i].data.add_(update[i] * alpha)
    return params


def normalization(v):
    s = group_product(v, v)
    s = s**0.5
    s = s.cpu().item()
    v = [vi / (s + 1e-6) for vi in v]
    return v


def orthnormal(w, v_list):
    for v in v_list:
        w = group_add(w, v, alpha=-group_product(w, v))
    return normalization(w)


def pyhessian_product(model, criterion, params, data=None, dataloader=None):
    """The Hessian-vector product ``density`` calls: ``hessian_vector_product(self.gradsH, ...)`` for
    ``data=``, ``dataloader_hv_product`` for ``dataloader=``; over ``params`` (PyHessian: every
    parameter with ``requires_grad``), gradients by ``autograd.grad`` instead of ``.backward``."""
    if data is not None:
        inputs, targets = data
        loss = criterion(model(inputs), targets)
        gradsH = torch.autograd.grad(loss, params, create_graph=True)
        return lambda v: torch.autograd.grad(gradsH, params, grad_outputs=v, only_inputs=True, retain_graph=True)

    def dataloader_hv_product(v):
        num_data = 0
        THv = [torch.zeros(p.size(), dtype=p.dtype) for p in params]
        for inputs, targets in dataloader:
            tmp_num_data = inputs.size(0)
            outputs = model(inputs)
            loss = criterion(outputs, targets)
            gradsH = torch.autograd.grad(loss, params, create_graph=True)
            Hv = torch.autograd.grad(gradsH, params, grad_outputs=v, only_inputs=True, retain_graph=False)
            THv = [THv1 + Hv1 * float(tmp_num_data) + 0. for THv1, Hv1 in zip(THv, Hv)]
            num_data += float(tmp_num_data)
        THv = [THv1 / float(num_data) for THv1 in THv]
        return THv

    return dataloader_hv_product


def pyhessian_density(product, params, iter=100, n_v=1, generator=None):
    """``density`` with the spec's changes: draws from ``generator`` in the parameters' dtype, ``T`` in
    float64 with ``eigh`` (§9.1), the weights of PR #23."""
    eigen_list_full = []
    weight_list_full = []
    for k in range(n_v):
        v = [torch.randint(0, 2, p.shape, generator=generator, dtype=p.dtype) for p in params]
        for v_i in v:
            v_i[v_i == 0] = -1
        v = normalization(v)
        v_list = [v]
        alpha_list = []
        beta_list = []
        for i in range(iter):
            if i == 0:
                w_prime = product(v)
                alpha = group_product(w_prime, v)
                alpha_list.append(alpha.cpu().item())
                w = group_add(w_prime, v, alpha=-alpha)
            else:
                beta = torch.sqrt(group_product(w, w))
                beta_list.append(beta.cpu().item())
                if beta_list[-1] != 0.:
                    v = orthnormal(w, v_list)
                    v_list.append(v)
                else:
                    w = [torch.randn(p.size(), generator=generator, dtype=p.dtype) for p in params]
                    v = orthnormal(w, v_list)
                    v_list.append(v)
                w_prime = product(v)
                alpha = group_product(w_prime, v)
                alpha_list.append(alpha.cpu().item())
                w_tmp = group_add(w_prime, v, alpha=-alpha)
                w = group_add(w_tmp, v_list[-2], alpha=-beta)
        T = torch.zeros(iter, iter, dtype=torch.float64)
        for i in range(len(alpha_list)):
            T[i, i] = alpha_list[i]
            if i < len(alpha_list) - 1:
                T[i + 1, i] = beta_list[i]
                T[i, i + 1] = beta_list[i]
        eigenvalues, eigenvectors = torch.linalg.eigh(T)
        eigen_list = eigenvalues
        weight_list = torch.pow(eigenvectors[0, :], 2)
        eigen_list_full.append(list(eigen_list.cpu().numpy()))
        weight_list_full.append(list(weight_list.cpu().numpy()))
    return eigen_list_full, weight_list_full


def density_generate(eigenvalues, weights, num_bins=10000, sigma_squared=1e-5, overhead=0.01):
    eigenvalues = np.array(eigenvalues)
    weights = np.array(weights)
    lambda_max = np.mean(np.max(eigenvalues, axis=1), axis=0) + overhead
    lambda_min = np.mean(np.min(eigenvalues, axis=1), axis=0) - overhead
    grids = np.linspace(lambda_min, lambda_max, num=num_bins)
    sigma = sigma_squared * max(1, (lambda_max - lambda_min))
    num_runs = eigenvalues.shape[0]
    density_output = np.zeros((num_runs, num_bins))
    for i in range(num_runs):
        for j in range(num_bins):
            x = grids[j]
            tmp_result = gaussian(eigenvalues[i, :], x, sigma)
            density_output[i, j] = np.sum(tmp_result * weights[i, :])
    density = np.mean(density_output, axis=0)
    normalization = np.sum(density) * (grids[1] - grids[0])
    density = density / normalization
    return density, grids


def gaussian(x, x0, sigma_squared):
    return np.exp(-(x0 - x)**2 / (2.0 * sigma_squared)) / np.sqrt(2 * np.pi * sigma_squared)


# ---- models, data and the dense Hessian --------------------------------------------------------------

def build(kind: str) -> tuple[nn.Module, list[tuple[Tensor, Tensor]]]:
    """A float64 model with random BatchNorm affine parameters and running statistics, in train mode,
    and two batches of unequal sizes."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    if kind == "mlp":
        model, shape, classes = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 4)), (6,), 4
    elif kind == "tiny":  # 17 parameters, for the mean squared error (softmax's invariance has zero eigenvalues)
        model, shape, classes = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)), (2,), 2
    else:
        model, shape, classes = ConvNet(), (1, 6, 6), 3
    model = model.double()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.weight.copy_(1 + 0.5 * torch.randn(module.weight.shape, generator=generator))
                module.bias.normal_(0, 0.5, generator=generator)
                module.running_mean.normal_(0, 0.3, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
    batches = [(2 * torch.randn(size, *shape, generator=generator, dtype=torch.float64),
                torch.randint(0, classes, (size,), generator=generator)) for size in (7, 4)]
    return model, batches


def dense_hessian(model: nn.Module, batches: list[tuple[Tensor, Tensor]], params: list[Tensor],
                  loss_fn=F.cross_entropy) -> Tensor:
    """The Hessian of the size-weighted mean loss over ``batches`` w.r.t. ``params`` (eval mode)."""
    names = {id(p): name for name, p in model.named_parameters()}
    shapes, sizes = [p.shape for p in params], [p.numel() for p in params]
    total = sum(len(targets) for _, targets in batches)

    def loss(flat: Tensor) -> Tensor:
        values = {names[id(p)]: part.view(shape) for p, part, shape in zip(params, flat.split(sizes), shapes)}
        return sum(loss_fn(functional_call(model, values, (inputs,)), targets) * len(targets) / total
                   for inputs, targets in batches)

    with measurement_mode(model):
        return torch.autograd.functional.hessian(loss, torch.cat([p.detach().flatten() for p in params]),
                                                 vectorize=True)


def start_vector(params: list[Tensor], seed: int) -> Tensor:
    """The unit Rademacher start vector ``spectral_density`` draws first from a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    signs = torch.cat([(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).flatten() for p in params])
    return signs.double() / signs.numel() ** 0.5


def snapshot(model: nn.Module) -> tuple:
    return ({name: value.clone() for name, value in model.state_dict().items()},
            [None if p.grad is None else p.grad.clone() for p in model.parameters()],
            [module.training for module in model.modules()], torch.get_rng_state())


def assert_same(before: tuple, after: tuple) -> None:
    (state, grads, modes, rng), (state_after, grads_after, modes_after, rng_after) = before, after
    assert state.keys() == state_after.keys()
    assert all(torch.equal(state[name], state_after[name]) for name in state)
    assert [g is None for g in grads] == [g is None for g in grads_after]
    assert all(torch.equal(g, h) for g, h in zip(grads, grads_after) if g is not None)
    assert modes == modes_after and torch.equal(rng, rng_after)


# ---- spectral_density ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, hessian, subset", [("mlp", "batch", False), ("conv", "batch", False),
                                                    ("conv", "subset", False), ("conv", "subset", True)])
def test_lanczos_matches_restated_pyhessian_and_changes_nothing(kind: str, hessian: str, subset: bool):
    model, batches = build(kind)
    params = [p for name, p in model.named_parameters() if not subset or name.endswith("weight")]
    for p in params[::2]:
        p.grad = torch.randn_like(p)
    before = snapshot(model)
    generator = torch.Generator().manual_seed(5)
    with measurement_mode(model):
        hvp = (batch_hessian(model, F.cross_entropy, *batches[0], params) if hessian == "batch"
               else subset_hessian(model, F.cross_entropy, batches, params, CPU))
        nodes, weights = spectral_density(hvp, params, iterations=12, n_vectors=2, generator=generator)
    assert_same(before, snapshot(model))
    reference_generator = torch.Generator().manual_seed(5)
    with measurement_mode(model):
        product = (pyhessian_product(model, F.cross_entropy, params, data=batches[0]) if hessian == "batch"
                   else pyhessian_product(model, F.cross_entropy, params, dataloader=batches))
        expected_nodes, expected_weights = map(torch.tensor, pyhessian_density(product, params, iter=12, n_v=2,
                                                                               generator=reference_generator))
    assert nodes.dtype == weights.dtype == torch.float64 and nodes.shape == weights.shape == (2, 12)
    scale = expected_nodes.abs().max().item()
    torch.testing.assert_close(nodes, expected_nodes, rtol=0, atol=1e-9 * scale)
    torch.testing.assert_close(weights, expected_weights, rtol=0, atol=1e-9)
    assert torch.equal(generator.get_state(), reference_generator.get_state())
    assert (nodes.diff(dim=1) >= 0).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)
    assert not torch.equal(nodes[0], nodes[1])  # two start vectors


def test_as_many_steps_as_entries_recover_the_spectrum_and_the_start_vector_weights():
    model, batches = build("tiny")
    params = list(model.parameters())
    batch = batches[0][0], torch.randn(7, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    hessian = dense_hessian(model, [batch], params, F.mse_loss)
    eigenvalues, eigenvectors = torch.linalg.eigh(hessian)
    scale = eigenvalues.abs().max()
    assert eigenvalues.diff().min() > 1e-3 * scale  # distinct: each (qᵢᵀv̂)² is defined
    with measurement_mode(model):
        hvp = batch_hessian(model, F.mse_loss, *batch, params)
        nodes, weights = spectral_density(hvp, params, iterations=17, generator=torch.Generator().manual_seed(2))
    # PyHessian's 1e-6 in the normalisation moves the nodes by up to ~1.4e-5 relative here.
    torch.testing.assert_close(nodes[0], eigenvalues, rtol=0, atol=5e-5 * scale)
    torch.testing.assert_close(weights[0], (eigenvectors.T @ start_vector(params, 2)) ** 2, rtol=0, atol=5e-5)


def test_gauss_quadrature_reproduces_the_start_vector_moments():
    model, batches = build("conv")
    params = list(model.parameters())
    hessian = dense_hessian(model, batches, params)
    norm = torch.linalg.eigvalsh(hessian).abs().max()
    steps = 6
    with measurement_mode(model):
        hvp = subset_hessian(model, F.cross_entropy, batches, params, CPU)
        nodes, weights = spectral_density(hvp, params, iterations=steps, generator=torch.Generator().manual_seed(3))
    vector = start_vector(params, 3)
    power = vector.clone()
    for k in range(2 * steps):
        expected = (vector @ power) / norm ** k                     # v̂ᵀHᵏv̂ / ‖H‖ᵏ
        assert abs((weights[0] * (nodes[0] / norm) ** k).sum() - expected) <= 5e-5, k
        power = hessian @ power


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_zero_hessian_takes_the_breakdown_branch(dtype: torch.dtype):
    params = [torch.zeros(4, 5, dtype=dtype), torch.zeros(3, dtype=dtype)]

    def zero(vectors):
        return [torch.zeros_like(v) for v in vectors]

    generator = torch.Generator().manual_seed(7)
    nodes, weights = spectral_density(zero, params, iterations=5, n_vectors=2, generator=generator)
    reference_generator = torch.Generator().manual_seed(7)
    pyhessian_density(zero, params, iter=5, n_v=2, generator=reference_generator)
    assert torch.equal(nodes, torch.zeros(2, 5, dtype=torch.float64))
    assert torch.equal(weights.sum(dim=1), torch.ones(2, dtype=torch.float64))
    assert torch.equal(generator.get_state(), reference_generator.get_state())
    if dtype == torch.float32:  # PyHessian's own draws from the global generator, literally
        torch.manual_seed(7)
        spectral_density(zero, params, iterations=5, n_vectors=2)
        after = torch.get_rng_state()
        torch.manual_seed(7)
        for _ in range(2):
            for p in params:
                torch.randint_like(p, high=2)
            for _ in range(4):
                for p in params:
                    torch.randn(p.size())
        assert torch.equal(after, torch.get_rng_state())


def test_a_failing_product_changes_nothing():
    model, batches = build("conv")
    before = snapshot(model)
    calls = []

    def failing(vectors):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory")
        return hvp(vectors)

    with pytest.raises(RuntimeError, match="out of memory"), measurement_mode(model):
        hvp = batch_hessian(model, F.cross_entropy, *batches[1], list(model.parameters()))
        spectral_density(failing, list(model.parameters()), iterations=5, generator=torch.Generator())
    assert_same(before, snapshot(model))


# ---- density_curve and its plot -----------------------------------------------------------------------

def test_density_curve_matches_restated_density_generate(tmp_path):
    generator = torch.Generator().manual_seed(4)
    nodes = (torch.randn(3, 20, generator=generator, dtype=torch.float64) * 4).sort(dim=1).values
    weights = torch.rand(3, 20, generator=generator, dtype=torch.float64)
    weights /= weights.sum(dim=1, keepdim=True)
    for runs, bins, sigma_squared, overhead in ((slice(None), 10000, 1e-5, 0.01), (slice(None), 300, 0.05, 0.5),
                                                (0, 1000, 1e-3, 0.01)):
        grid, density = density_curve(nodes[runs], weights[runs], bins, sigma_squared, overhead)
        expected_density, expected_grid = density_generate(np.atleast_2d(nodes[runs].numpy()),
                                                           np.atleast_2d(weights[runs].numpy()), bins,
                                                           sigma_squared, overhead)
        assert grid.dtype == density.dtype == torch.float64 and grid.shape == density.shape == (bins,)
        torch.testing.assert_close(grid, torch.from_numpy(expected_grid), rtol=1e-10, atol=0)
        torch.testing.assert_close(density, torch.from_numpy(expected_density), rtol=1e-10, atol=0)
        assert math.isclose(density.sum().item() * (grid[1] - grid[0]).item(), 1.0, rel_tol=1e-12)
    path = plot_density(grid, density, tmp_path / "esd.png", title="Hessian spectral density")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- bad input ----------------------------------------------------------------------------------------

PARAMS = [torch.zeros(2, 3), torch.zeros(4)]


@pytest.mark.parametrize("arguments, words", [
    ({"iterations": 0}, r"iterations must be an integer from 1 to the number of entries of params, 10 \(got 0\)\."),
    ({"iterations": 11}, r"iterations .* \(got 11\)\."),
    ({"iterations": 2.0}, r"iterations .* \(got 2\.0\)\."),
    ({"iterations": 2, "n_vectors": 0}, r"n_vectors must be a positive integer \(got 0\)\."),
])
def test_spectral_density_refuses_bad_arguments(arguments: dict, words: str):
    with pytest.raises(ValueError, match=words):
        spectral_density(lambda v: v, PARAMS, **arguments)


NODES = torch.zeros(2, 5)


@pytest.mark.parametrize("arguments, words", [
    ({"weights": torch.zeros(2, 4)}, r"nodes and weights must have one shape, .* \(got \(2, 5\) and \(2, 4\)\)\."),
    ({"nodes": torch.zeros(1, 2, 5), "weights": torch.zeros(1, 2, 5)}, r"nodes and weights must have one shape"),
    ({"nodes": torch.zeros(2, 0), "weights": torch.zeros(2, 0)}, r"nodes and weights must have one shape"),
    ({"bins": 1}, r"bins must be an integer >= 2 \(got 1\)\."),
    ({"sigma_squared": 0.0}, r"sigma_squared must be a number > 0 \(got 0\.0\)\."),
    ({"sigma_squared": float("nan")}, r"sigma_squared must be a number > 0 \(got nan\)\."),
    ({"overhead": 0}, r"overhead must be a number > 0 \(got 0\)\."),
])
def test_density_curve_refuses_bad_arguments(arguments: dict, words: str):
    arguments = {"nodes": NODES, "weights": torch.zeros(2, 5), **arguments}
    with pytest.raises(ValueError, match=words):
        density_curve(**arguments)
