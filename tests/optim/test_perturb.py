"""The param-group option ``perturb`` (docs/optimizers.md, "The param-group option perturb") and SAM-ON
(Mueller et al., NeurIPS 2023), against the release's formula (mueller-mp/SAM-ON ``sam_on.py``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flatmin.optim import FriendlySAM, GAM, GNP, GSAM, MSAM, NSO, SAM, TRACER, VaSSO, WSAM, param_groups
from tests.optim.common import (SGD_KWARGS, assert_params_equal, closure_for, convnet, grad, image_batches,
                                norm, parameters, sgd_step, stepper_for)

#: The release's epsilon in SAM_ON and ASAM_ON.
RELEASE_EPS = 1e-16


def norm_parameter_names(model: nn.Module) -> set[str]:
    return {f"{module_name}.{name}" for module_name, module in model.named_modules()
            if isinstance(module, nn.BatchNorm2d) for name, _ in module.named_parameters()}


def transcribe_sam_on(model: nn.Module, theta, x, y, on: set[str], rho: float, adaptive: bool, eta: float,
                      lr: float):
    """SAM_ON / ASAM_ON (p=2, elementwise, normalize_bias) written out: only the tensors in ``on``
    move, e = rho·T²⊙g/(‖T⊙g‖_on + 1e-16) with T = |θ|+eta (ASAM) or 1; plain SGD base."""
    g = grad(model, theta, x, y)
    t = {n: (theta[n].abs() + eta) if adaptive else torch.ones_like(theta[n]) for n in on}
    scaled_norm = norm({n: t[n] * g[n] for n in on})
    perturbed = {n: theta[n] + (rho * t[n] ** 2 * g[n] / (scaled_norm + RELEASE_EPS) if n in on else 0)
                 for n in theta}
    return sgd_step(theta, grad(model, perturbed, x, y), lr)


@pytest.mark.parametrize("perturb", ["norm", "no_norm"], ids=["only_norm", "no_norm"])
@pytest.mark.parametrize(("adaptive", "rho", "eta"), [(False, 0.05, 0.01), (True, 10.0, 0.0)],
                         ids=["sam_on", "asam_on_readme"])
def test_sam_on_matches_release(perturb: str, adaptive: bool, rho: float, eta: float):
    model = convnet()
    norms = norm_parameter_names(model)
    on = norms if perturb == "norm" else set(parameters(model)) - norms
    groups = param_groups(model, 0.0, True, adaptive_tensors="all", perturb_tensors=perturb)
    assert {name for name, p in model.named_parameters() for group in groups
            if group["perturb"] and any(p is q for q in group["params"])} == on
    optimizer = SAM(groups, torch.optim.SGD, rho=rho, adaptive=adaptive, eta=eta, lr=0.1)
    for x, y in image_batches(5):
        expected = transcribe_sam_on(model, parameters(model), x, y, on, rho, adaptive, eta, lr=0.1)
        optimizer.step(closure_for(model, optimizer, x, y, []))
        assert_params_equal(model, expected, rtol=1e-9, atol=1e-11)      # the epsilons differ: 1e-12 vs 1e-16


NOTHING_PERTURBED = {
    "sam": lambda groups: SAM(groups, torch.optim.SGD, rho=0.5, **SGD_KWARGS),
    "asam": lambda groups: SAM(groups, torch.optim.SGD, rho=0.5, adaptive=True, **SGD_KWARGS),
    "usam": lambda groups: SAM(groups, torch.optim.SGD, rho=0.5, normalize=False, **SGD_KWARGS),
    "gam": lambda groups: GAM(groups, torch.optim.SGD, **SGD_KWARGS),
    "nso": lambda groups: NSO(groups, torch.optim.SGD, sigma=0.1, **SGD_KWARGS),
    "tracer": lambda groups: TRACER(groups, torch.optim.SGD, **SGD_KWARGS),
    "msam": lambda groups: MSAM(groups, torch.optim.SGD, rho=0.5, **SGD_KWARGS),
    "gsam": lambda groups: GSAM(groups, torch.optim.SGD, rho=0.5, **SGD_KWARGS),
    "gsam_min_f": lambda groups: GSAM(groups, torch.optim.SGD, rho=0.5, minimize_fp=False, **SGD_KWARGS),
    "wsam": lambda groups: WSAM(groups, torch.optim.SGD, rho=0.5, **SGD_KWARGS),
    "wsam_coupled": lambda groups: WSAM(groups, torch.optim.SGD, rho=0.5, decouple=False, **SGD_KWARGS),
    "gnp": lambda groups: GNP(groups, torch.optim.SGD, **SGD_KWARGS),
    "friendly_sam": lambda groups: FriendlySAM(groups, torch.optim.SGD, rho=0.2, **SGD_KWARGS),
    "vasso": lambda groups: VaSSO(groups, torch.optim.SGD, rho=0.2, **SGD_KWARGS),
}


@pytest.mark.parametrize("name", list(NOTHING_PERTURBED))
def test_nothing_perturbed_gives_the_base_trajectory(name: str):
    data = image_batches(5)
    models = [convnet(), convnet()]
    groups = [dict(group, perturb=False) for group in param_groups(models[1], 5e-4, True)]
    for model, optimizer in zip(models, (torch.optim.SGD(models[0].parameters(), **SGD_KWARGS),
                                         NOTHING_PERTURBED[name](groups))):
        runner = stepper_for(model, optimizer)
        for x, y in data:
            runner.step(x, y)
    for (key, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        assert torch.allclose(a.double(), b.double(), rtol=1e-11, atol=1e-13), key
