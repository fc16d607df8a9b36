"""Fisher-mask SAM (docs/optimizers.md, "Fisher-mask SAM") against the formula of the released SSAM-F
(Mi-Peng/Sparse-Sharpness-Aware-Minimization@76974fd ``solver/sam.py`` ``SSAMF``) as the spec places the
mask, in float64: the empirical Fisher of the batch's first rows, the top-k mask over the perturbed
tensors, the masked ascent with epsilon 1e-7, the call pattern of the extended closure, the state."""

from __future__ import annotations

import copy
from fractions import Fraction

import pytest
import torch
from torch import nn

from flatmin.optim import SAM, FisherMaskSAM, VaSSO, param_groups
from flatmin.runtime.precision import LossScaler
from tests.optim.common import (CPU, MODELS, SGD_KWARGS, assert_params_equal, batches, closure_for, convnet, grad,
                                image_batches, loss_and_grad, mlp, norm, overflow_on_pass, parameters, sgd_step,
                                stepper_for)

#: The release's epsilon in ‖g‖ + ε.
EPS = 1e-7


class FisherMaskTranscription:
    """SSAM-F's step written out as the spec places the mask: t and the mask carried across steps."""

    def __init__(self, rho: float, sparsity: float, mask_every: int, num_samples: int):
        self.rho, self.sparsity, self.mask_every, self.num_samples = rho, sparsity, mask_every, num_samples
        self.t = 0
        self.mask: dict[str, torch.Tensor] | None = None

    def build_mask(self, model: nn.Module, theta, x, y) -> None:
        """F = Σ_{i<n} (∇ℓ_i(θ))², n = min(num_samples, B); 1 on the int(N·(1−sparsity)) largest entries."""
        fisher = {k: torch.zeros_like(v) for k, v in theta.items()}
        for i in range(min(self.num_samples, len(y))):
            g_i = grad(model, theta, x[i:i + 1], y[i:i + 1])
            fisher = {k: fisher[k] + g_i[k] ** 2 for k in theta}
        flat = torch.cat([f.flatten() for f in fisher.values()])
        chosen = torch.zeros_like(flat)
        chosen[torch.topk(flat, int(flat.numel() * (1 - self.sparsity))).indices] = 1.0
        self.mask = dict(zip(theta, (part.view_as(v) for part, v in
                                     zip(chosen.split([v.numel() for v in theta.values()]), theta.values()))))

    def gradient(self, model: nn.Module, theta, x, y):
        """``L_B(θ)`` and ``G = ∇L_B(θ + mask⊙g·rho/(‖g‖ + 1e-7))``; advances t."""
        loss, g = loss_and_grad(model, theta, x, y)
        if self.t % self.mask_every == 0:
            self.build_mask(model, theta, x, y)
        scale = self.rho / (norm(g) + EPS)
        perturbed = {k: theta[k] + self.mask[k] * g[k] * scale for k in theta}
        self.t += 1
        return loss, grad(model, perturbed, x, y)


def expected_calls(mask_step: bool, rows: int) -> list:
    """The closure calls of one step: ``indices`` of each (None: the whole batch)."""
    return [None, *([[i] for i in range(rows)] if mask_step else []), None]


@pytest.mark.parametrize(("sparsity", "num_samples"), [(0.5, 4), (0.8, 32)], ids=["half_4rows", "sparse_all_rows"])
@pytest.mark.parametrize("model_name", list(MODELS))
def test_fisher_mask_sam_matches_ssamf_release(model_name: str, sparsity: float, num_samples: int):
    """5 steps with mask_every=2: the mask is built on steps 0, 2 and 4 from single-row passes
    (num_samples 32 > B = 16: every row), kept on steps 1 and 3."""
    build_model, build_batches = MODELS[model_name]
    model = build_model()
    optimizer = FisherMaskSAM(model.parameters(), torch.optim.SGD, rho=0.1, sparsity=sparsity, mask_every=2,
                              num_samples=num_samples, lr=0.1)
    transcription = FisherMaskTranscription(0.1, sparsity, 2, num_samples)
    size = sum(p.numel() for p in model.parameters())
    for step, (x, y) in enumerate(build_batches(5)):
        mask_step = step % 2 == 0
        assert optimizer.passes_per_step == (2 + num_samples if mask_step else 2)
        theta = parameters(model)
        loss, g = transcription.gradient(model, theta, x, y)
        calls: list = []
        returned = optimizer.step(closure_for(model, optimizer, x, y, calls))
        assert [None if c["indices"] is None else c["indices"].tolist() for c in calls] == \
            expected_calls(mask_step, min(num_samples, len(y)))
        assert all(c["backward"] and not c["per_example"] for c in calls)
        assert all(c["indices"] is None or c["indices"].dtype == torch.long for c in calls)
        assert torch.allclose(returned, loss, rtol=1e-13)
        assert_params_equal(model, sgd_step(theta, g, 0.1))
        masks = [optimizer.state[p]["mask"] for p in model.parameters()]
        for (name, expected), mask in zip(transcription.mask.items(), masks):
            assert torch.equal(mask, expected), name
        assert sum(mask.sum().item() for mask in masks) == int(size * (1 - sparsity))
        assert optimizer.steps == step + 1


def test_fisher_mask_sam_sparsity_zero_is_sam_with_its_epsilon():
    """sparsity = 0 perturbs every entry: SAM with 1e-7 in ‖g‖ + ε (VaSSO with theta = 1 is the same),
    not SAM's 1e-12; the Fisher passes are still taken on mask steps."""
    models = [mlp(), mlp(), mlp()]
    fisher = FisherMaskSAM(models[0].parameters(), torch.optim.SGD, rho=0.05, sparsity=0.0, mask_every=2,
                           num_samples=3, **SGD_KWARGS)
    vasso = VaSSO(models[1].parameters(), torch.optim.SGD, rho=0.05, theta=1.0, **SGD_KWARGS)
    sam = SAM(models[2].parameters(), torch.optim.SGD, rho=0.05, **SGD_KWARGS)
    transcription = FisherMaskTranscription(0.05, 0.0, 2, 3)
    momentum = torch.optim.SGD([nn.Parameter(p.detach().clone()) for p in models[0].parameters()], **SGD_KWARGS)
    for x, y in batches(5):
        _, g = transcription.gradient(models[0], parameters(models[0]), x, y)
        assert all(bool((mask == 1).all()) for mask in transcription.mask.values())
        for p, value in zip(momentum.param_groups[0]["params"], g.values()):
            p.grad = value
        momentum.step()                                  # the same base step, written with torch's SGD
        calls: list = []
        for model, optimizer in zip(models, (fisher, vasso, sam)):
            optimizer.step(closure_for(model, optimizer, x, y, calls if optimizer is fisher else []))
        assert len(calls) in (2, 5)
        expected = dict(zip(g, (p.detach() for p in momentum.param_groups[0]["params"])))
        assert_params_equal(models[0], expected, rtol=1e-12, atol=1e-14)
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        assert torch.allclose(p, q, rtol=1e-12, atol=1e-14)
    gaps = [(p - q).abs().max() for p, q in zip(models[0].parameters(), models[2].parameters())]
    assert 1e-13 < max(gaps) < 1e-6                      # SAM's epsilon is 1e-12


def plain_closure():
    raise AssertionError("a plain closure must not be called")


def test_plain_closure_is_refused_with_a_type_error_naming_the_protocol():
    model = mlp()
    optimizer = FisherMaskSAM(model.parameters(), torch.optim.SGD, lr=0.1)
    before = parameters(model)
    with pytest.raises(TypeError) as refused:
        optimizer.step(plain_closure)
    assert str(refused.value) == (
        "FisherMaskSAM needs a closure of the extended protocol, closure(indices=None, backward=True, "
        "per_example=False) with an int attribute batch_size; this one lacks indices=, backward=, per_example=, "
        "an int attribute batch_size")
    assert_params_equal(model, before, rtol=0, atol=0)
    assert optimizer.steps == 0 and not optimizer.state


def test_fisher_mask_sam_keeps_t_and_the_mask_in_the_state_dict():
    """t and the mask are state: a fresh optimizer loaded after step 3 (mask_every 2: the mask of step
    2) takes steps 4 and 5 as the original does, bit for bit; 5 steps pass 2+3, 2, 2+3, 2, 2+3 calls."""
    data = MODELS["convbn"][1](5)
    model = convnet()
    optimizer = FisherMaskSAM(model.parameters(), torch.optim.SGD, rho=0.1, mask_every=2, num_samples=3,
                              **SGD_KWARGS)
    counts = []
    for x, y in data[:3]:
        calls: list = []
        optimizer.step(closure_for(model, optimizer, x, y, calls))
        counts.append(len(calls))
    saved = copy.deepcopy(optimizer.state_dict())
    assert saved["steps"] == 3
    assert all(set(state) == {"mask"} for state in saved["method"]["state"].values())
    twin = copy.deepcopy(model)
    twin_optimizer = FisherMaskSAM(twin.parameters(), torch.optim.SGD, rho=0.1, mask_every=2, num_samples=3,
                                   **SGD_KWARGS)
    twin_optimizer.load_state_dict(saved)
    assert twin_optimizer.steps == 3 and twin_optimizer.passes_per_step == 2
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(optimizer.state[p]["mask"], twin_optimizer.state[q]["mask"])
    for x, y in data[3:]:
        for net, opt in ((model, optimizer), (twin, twin_optimizer)):
            calls = []
            opt.step(closure_for(net, opt, x, y, calls))
        counts.append(len(calls))
    assert counts == [5, 2, 5, 2, 5]
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


def test_mean_passes_per_step_is_exact():
    optimizer = FisherMaskSAM(mlp().parameters(), torch.optim.SGD, mask_every=100, num_samples=16, lr=0.1)
    assert optimizer.mean_passes_per_step == Fraction(216, 100)
    assert optimizer.passes_per_step == 18


def test_nothing_perturbed_gives_the_base_trajectory():
    """Every group ``perturb=False``: no mask, no ascent; G = ∇L(θ), the base optimizer's step (the spec's
    degenerate case; tests/optim/test_perturb.py's test for the other methods, here with the Fisher passes)."""
    data = image_batches(5)
    models = [convnet(), convnet()]
    groups = [dict(group, perturb=False) for group in param_groups(models[1], 5e-4, True)]
    optimizers = (torch.optim.SGD(models[0].parameters(), **SGD_KWARGS),
                  FisherMaskSAM(groups, torch.optim.SGD, rho=0.5, mask_every=2, num_samples=3, **SGD_KWARGS))
    for model, optimizer in zip(models, optimizers):
        runner = stepper_for(model, optimizer)
        for x, y in data:
            runner.step(x, y)
    assert optimizers[1].steps == 5 and not optimizers[1].state
    for (key, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-11, atol=1e-13), key


def test_rho_zero_gives_the_base_trajectory_exactly():
    """rho = 0: e = 0 whatever the mask, so the trainer's steps are the base optimizer's bit for bit
    (BatchNorm statistics from the first pass: the Fisher passes leave them alone)."""
    data = image_batches(6)
    models = [convnet(), convnet()]
    optimizers = (torch.optim.SGD(models[0].parameters(), **SGD_KWARGS),
                  FisherMaskSAM(models[1].parameters(), torch.optim.SGD, rho=0.0, mask_every=2, num_samples=4,
                                **SGD_KWARGS))
    for model, optimizer in zip(models, optimizers):
        runner = stepper_for(model, optimizer)
        for x, y in data:
            runner.step(x, y)
    assert runner.passes == 3 * (2 + 4) + 3 * 2              # mask steps t = 0, 2, 4
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        assert torch.equal(a, b)


def test_an_overflow_in_a_fisher_pass_skips_the_step_and_the_next_step_builds_the_mask_again():
    """An fp16 overflow in a single-row pass skips the base step and leaves t at 0, so the next step
    is a mask step again, from its own batch: from there the run is the one without the overflow."""
    data = image_batches(4)
    models = [convnet(), convnet()]
    optimizers = [FisherMaskSAM(model.parameters(), torch.optim.SGD, rho=0.1, mask_every=3, num_samples=4,
                                **SGD_KWARGS) for model in models]
    overflowing = stepper_for(models[0], optimizers[0], scaler=LossScaler(CPU, enabled=True),
                              loss_fn=overflow_on_pass(3))
    before = parameters(models[0])
    overflowing.step(*data[0])                           # its second Fisher pass overflows
    assert_params_equal(models[0], before, rtol=0, atol=0)
    assert optimizers[0].steps == 0 and optimizers[0].passes_per_step == 6
    clean = stepper_for(models[1], optimizers[1], scaler=LossScaler(CPU, enabled=True))
    for x, y in data[1:]:
        overflowing.step(x, y)
        clean.step(x, y)
    assert optimizers[0].steps == optimizers[1].steps == 3
    for p, q in zip(*(model.parameters() for model in models)):
        assert torch.equal(p, q)
