"""Helpers of the optimizer tests: a small MLP, fixed batches, closures, and the transcriptions'
building blocks (the loss and its gradient at given parameter values, with ``torch.func``)."""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from flatmin.optim import (BSAM, ESAM, GAM, GNP, GSAM, MSAM, NSO, RWP, SAM, TRACER, WSAM, FisherMaskSAM,
                           FriendlySAM, LookSAM, Lookahead, VaSSO, WeightAveraging)
from flatmin.runtime.precision import LossScaler
from flatmin.step import Stepper
from flatmin.runtime import Runtime

SGD_KWARGS = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}
CPU = torch.device("cpu")

Params = dict[str, Tensor]


def mlp(batchnorm: bool = False, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(6, 8)] + ([nn.BatchNorm1d(8)] if batchnorm else []) + [nn.Tanh(), nn.Linear(8, 3)]
    return nn.Sequential(*layers).to(dtype)


def convnet(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A conv net with BatchNorm and biases, for 1×6×6 images (``image_batches``)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 36, 3)).to(dtype)


def image_batches(count: int, seed: int = 1, dtype: torch.dtype = torch.float64) -> list[tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 1, 6, 6, generator=generator).to(dtype), torch.randint(0, 3, (16,), generator=generator))
            for _ in range(count)]


def batches(count: int, seed: int = 1, dtype: torch.dtype = torch.float64) -> list[tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 6, generator=generator).to(dtype), torch.randint(0, 3, (16,), generator=generator))
            for _ in range(count)]


#: The two models the formula tests run on: (model factory, batch factory).
MODELS = {"mlp": (mlp, batches), "convbn": (convnet, image_batches)}


def closure_for(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, calls: list):
    """A closure of the extended protocol (``closure(indices=None, backward=True, per_example=False)``
    with ``batch_size``), written as a user would; ``calls`` gets one entry per call, the call's
    keywords."""
    def closure(indices=None, backward=True, per_example=False):
        calls.append({"indices": indices, "backward": backward, "per_example": per_example})
        rows_x, rows_y = (x, y) if indices is None else (x[indices], y[indices])
        if not backward:
            with torch.no_grad():
                return nn.functional.cross_entropy(model(rows_x), rows_y, reduction="none")
        optimizer.zero_grad()
        outputs = model(rows_x)
        if per_example:
            losses = nn.functional.cross_entropy(outputs, rows_y, reduction="none")
            losses.mean().backward()
            return losses.detach()
        loss = nn.functional.cross_entropy(outputs, rows_y)
        loss.backward()
        return loss.detach()
    closure.batch_size = len(y)
    return closure


def plain_closure_for(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, calls: list):
    """A plain closure, ``closure()`` only, as the basic contract's users write it; ``calls`` counts its calls."""
    def closure():
        calls.append(1)
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss
    return closure


def assert_a_twin_continues_bit_for_bit(model: nn.Module, optimizer: torch.optim.Optimizer,
                                        factory: Callable[..., torch.optim.Optimizer], data) -> None:
    """A fresh optimizer (``factory(params)``) on a copy of ``model``, loaded with ``optimizer``'s
    state_dict, takes the steps of ``data`` bit for bit as ``optimizer`` does (same random stream)."""
    twin = copy.deepcopy(model)
    twin_optimizer = factory(twin.parameters())
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    for net, opt in ((model, optimizer), (twin, twin_optimizer)):
        torch.manual_seed(5)
        for x, y in data:
            opt.step(closure_for(net, opt, x, y, []))
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


def train(model: nn.Module, optimizer: torch.optim.Optimizer, data) -> int:
    """``optimizer.step(closure)`` on every batch; returns the number of closure calls."""
    calls: list = []
    for x, y in data:
        optimizer.step(closure_for(model, optimizer, x, y, calls))
    return len(calls)


def overflow_on_pass(number: int):
    """A loss function that returns inf on its ``number``-th call (an fp16 overflow in that pass)."""
    calls = []

    def loss_fn(outputs, targets, reduction="mean"):
        calls.append(1)
        loss = nn.functional.cross_entropy(outputs, targets, reduction=reduction)
        return loss * float("inf") if len(calls) == number else loss

    return loss_fn


def stepper_for(model: nn.Module, optimizer: torch.optim.Optimizer, accumulate: int = 1,
                scaler: LossScaler | None = None, loss_fn=nn.functional.cross_entropy, precision: str = "fp32",
                grad_clip_norm: float | None = None) -> Stepper:
    """The trainer's own step driver, on the CPU, in ``precision`` (fp32: no autocast). ``scaler``
    replaces its loss scaler: an enabled one checks every pass for overflow without fp16's autocast,
    so that the skip rules are tested on float64 models."""
    stepper = Stepper(model, optimizer, Runtime.local("cpu", precision), loss_fn, accumulate, grad_clip_norm)
    if scaler is not None:
        stepper.scaler = scaler
    return stepper


# -- transcriptions -------------------------------------------------------------------------------
def parameters(model: nn.Module) -> Params:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def loss_and_grad(model: nn.Module, theta: Params, x: Tensor, y: Tensor) -> tuple[Tensor, Params]:
    """``L_B(θ)`` and ``∇L_B(θ)`` of ``model`` at the parameter values ``theta``."""
    leaves = {name: value.detach().requires_grad_() for name, value in theta.items()}
    loss = nn.functional.cross_entropy(functional_call(model, leaves, (x,)), y)
    return loss.detach(), dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))


def grad(model: nn.Module, theta: Params, x: Tensor, y: Tensor) -> Params:
    return loss_and_grad(model, theta, x, y)[1]


def norm(tensors: Params) -> Tensor:
    return torch.sqrt(sum((t ** 2).sum() for t in tensors.values()))


def combine(*terms: tuple[float | Tensor, Params]) -> Params:
    """``Σ cᵢ·xᵢ`` over dicts of tensors."""
    names = terms[0][1]
    return {name: sum(c * x[name] for c, x in terms) for name in names}


def sgd_step(theta: Params, g: Params, lr: float) -> Params:
    """Plain SGD (no momentum, no weight decay): the base step of the transcriptions."""
    return combine((1.0, theta), (-lr, g))


def assert_params_equal(model: nn.Module, expected: Params, rtol: float = 1e-10, atol: float = 1e-12) -> None:
    for name, p in model.named_parameters():
        assert torch.allclose(p.detach(), expected[name], rtol=rtol, atol=atol), name


# -- every method, as the contract tests build them -----------------------------------------------
#: name: (factory(params) → optimizer, closure calls per step: of the first step where the count varies,
#: LookSAM's, whose pattern tests/optim/test_looksam.py checks)
METHOD_FACTORIES: dict[str, tuple[Callable[..., torch.optim.Optimizer], int]] = {
    "sam": (lambda params: SAM(params, torch.optim.SGD, rho=0.05, **SGD_KWARGS), 2),
    "asam": (lambda params: SAM(params, torch.optim.SGD, rho=0.5, adaptive=True, **SGD_KWARGS), 2),
    "usam": (lambda params: SAM(params, torch.optim.SGD, rho=0.05, normalize=False, **SGD_KWARGS), 2),
    "gam": (lambda params: GAM(params, torch.optim.SGD, **SGD_KWARGS), 4),
    "gam_paper": (lambda params: GAM(params, torch.optim.SGD, variant="paper", **SGD_KWARGS), 4),
    "nso": (lambda params: NSO(params, torch.optim.SGD, sigma=0.05, **SGD_KWARGS), 2),
    "nso_k3": (lambda params: NSO(params, torch.optim.SGD, sigma=0.05, num_perturbs=3, **SGD_KWARGS), 6),
    "nso_one_sided_lam": (lambda params: NSO(params, torch.optim.SGD, sigma=0.05, num_perturbs=2, two_sided=False,
                                             lam=0.5, distribution="laplace", **SGD_KWARGS), 3),
    "nso_clean_always": (lambda params: NSO(params, torch.optim.SGD, sigma=0.05, clean_pass="always", **SGD_KWARGS), 3),
    "sgd_tracer": (lambda params: TRACER(params, torch.optim.SGD, **SGD_KWARGS), 2),
    "adam_tracer": (lambda params: TRACER(params, torch.optim.Adam, lam=0.5, lr=1e-3), 2),
    "looksam": (lambda params: LookSAM(params, torch.optim.SGD, rho=0.05, k=2, **SGD_KWARGS), 2),
    "msam": (lambda params: MSAM(params, torch.optim.SGD, rho=0.3, **SGD_KWARGS), 1),
    "adamw_msam": (lambda params: MSAM(params, torch.optim.AdamW, rho=1.0, lr=1e-3, weight_decay=0.1), 1),
    "gsam": (lambda params: GSAM(params, torch.optim.SGD, rho=0.1, **SGD_KWARGS), 2),
    "gsam_adaptive_min_f": (lambda params: GSAM(params, torch.optim.SGD, rho=0.5, adaptive=True, minimize_fp=False,
                                                **SGD_KWARGS), 2),
    "wsam": (lambda params: WSAM(params, torch.optim.SGD, rho=0.1, **SGD_KWARGS), 2),
    "wsam_coupled_clipped": (lambda params: WSAM(params, torch.optim.SGD, rho=0.1, decouple=False, max_norm=0.1,
                                                 **SGD_KWARGS), 2),
    "gnp": (lambda params: GNP(params, torch.optim.SGD, **SGD_KWARGS), 2),
    "gnp_clean_normalized": (lambda params: GNP(params, torch.optim.SGD, normalize_clean=True, **SGD_KWARGS), 2),
    "b_gr": (lambda params: GNP(params, torch.optim.SGD, rho=-0.05, alpha=-0.2, normalize=False, **SGD_KWARGS), 2),
    "friendly_sam": (lambda params: FriendlySAM(params, torch.optim.SGD, rho=0.2, sigma=0.5, **SGD_KWARGS), 2),
    "friendly_sam_adaptive": (lambda params: FriendlySAM(params, torch.optim.Adam, rho=0.5, adaptive=True, lr=1e-3), 2),
    "vasso": (lambda params: VaSSO(params, torch.optim.SGD, rho=0.1, theta=0.4, **SGD_KWARGS), 2),
    "lookahead_sgd": (lambda params: Lookahead(torch.optim.SGD(params, **SGD_KWARGS), k=2), 1),
    "lookahead_sam": (lambda params: Lookahead(SAM(params, torch.optim.SGD, rho=0.05, **SGD_KWARGS), k=2), 2),
    "bsam": (lambda params: BSAM(params, lr=0.1, rho=0.05, num_data=1000), 2),
    "rapp": (lambda params: Lookahead(torch.optim.SGD(params, lr=0.1), k=2, prox="auto"), 1),
    "esam": (lambda params: ESAM(params, torch.optim.SGD, rho=0.05, beta=0.6, gamma=0.5, **SGD_KWARGS), 3),
    "esam_no_selection": (lambda params: ESAM(params, torch.optim.SGD, rho=0.05, beta=0.6, gamma=1.0, **SGD_KWARGS), 2),
    "rwp": (lambda params: RWP(params, torch.optim.SGD, sigma=0.05, lam=0.5, **SGD_KWARGS), 2),
    "marwp": (lambda params: RWP(params, torch.optim.SGD, sigma=0.05, lam=0.5, eta=0.1, beta=0.99, **SGD_KWARGS), 2),
    # FisherMaskSAM: 2 + num_samples single-row Fisher passes on mask steps (t % mask_every == 0), else 2.
    "fisher_mask_sam": (lambda params: FisherMaskSAM(params, torch.optim.SGD, rho=0.1, mask_every=2, num_samples=4,
                                                     **SGD_KWARGS), 6),
    "fisher_mask_sam_every_step": (lambda params: FisherMaskSAM(params, torch.optim.SGD, rho=0.1, sparsity=0.7,
                                                                mask_every=1, num_samples=3, **SGD_KWARGS), 5),
    "bsam_split2": (lambda params: BSAM(params, lr=0.1, rho=0.05, num_data=1000, batch_split=2), 4),
    "ema_sam": (lambda params: WeightAveraging(SAM(params, torch.optim.SGD, rho=0.05, **SGD_KWARGS), decay=0.9), 2),
    "swa_sgd": (lambda params: WeightAveraging(torch.optim.SGD(params, **SGD_KWARGS), kind="swa", start=1), 1),
}
