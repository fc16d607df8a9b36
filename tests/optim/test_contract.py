"""The common contract of docs/optimizers.md, checked for every method: passes per step, BatchNorm
statistics, checkpoints, AMP (bf16, the fp16 skip-step rule), gradient accumulation, no host
synchronisation inside ``step``, untouched parameters, and the degenerate cases."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch import nn

from flatmin.optim import (BSAM, ESAM, GNP, GSAM, METHODS, MSAM, NSO, RWP, SAM, TRACER, WSAM, FriendlySAM, Lookahead,
                           MultiPassOptimizer, VaSSO, WeightAveraging)
from flatmin.runtime.precision import LossScaler
from tests.optim.common import (CPU, METHOD_FACTORIES, SGD_KWARGS, batches, closure_for, convnet, image_batches, mlp,
                                overflow_on_pass, stepper_for, train)

NAMES = list(METHOD_FACTORIES)

#: Methods that take passes on single rows (FisherMaskSAM's Fisher passes). BatchNorm1d cannot run a
#: training forward on one row of [rows, features] (torch raises "Expected more than 1 value per channel
#: when training"), so their BatchNorm tests run the conv net, whose BatchNorm2d can.
SINGLE_ROW_PASSES = ("fisher_mask_sam",)


def batchnorm_model(name: str, dtype: torch.dtype = torch.float64):
    """A model with BatchNorm that the method can train, and its batch factory."""
    if name.startswith(SINGLE_ROW_PASSES):
        return convnet(dtype=dtype), image_batches
    return mlp(batchnorm=True, dtype=dtype), batches


def build(name: str, model: nn.Module) -> torch.optim.Optimizer:
    return METHOD_FACTORIES[name][0](model.parameters())


def innermost(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The torch optimizer at the bottom of a stack of wrappers."""
    while isinstance(optimizer, MultiPassOptimizer):
        optimizer = optimizer.base_optimizer
    return optimizer


def test_every_registered_method_and_wrapper_is_in_these_tests():
    """A new method (a class registered in ``METHODS``) fails here until it has an entry in
    ``METHOD_FACTORIES`` (tests/optim/common.py), so that every contract test runs it."""
    covered = set()
    for factory, _ in METHOD_FACTORIES.values():
        optimizer = factory(mlp().parameters())
        while isinstance(optimizer, MultiPassOptimizer):
            covered.add(type(optimizer))
            optimizer = optimizer.base_optimizer
    assert {*METHODS.values(), Lookahead, WeightAveraging} - covered == set()


@pytest.mark.parametrize("name", NAMES)
def test_each_step_makes_exactly_the_passes_the_spec_lists(name: str):
    model = mlp()
    optimizer = build(name, model)
    expected = METHOD_FACTORIES[name][1]
    assert optimizer.passes_per_step == expected                     # the first step's
    counts = []
    for batch in batches(4):
        announced = optimizer.passes_per_step                        # where the count varies, the next step's
        counts.append(train(model, optimizer, [batch]))
        assert counts[-1] == announced
    if optimizer.mean_passes_per_step == expected:                   # a constant count (not LookSAM's)
        assert counts == [expected] * 4


def first_pass_point(name: str, model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` at the point of the step's first pass: θ, or for NSO without a clean pass
    (lam = 0, ``clean_pass="when_needed"``) the first draw θ + sigma·ε, for bSAM the sample
    θ + ε/sqrt(N·s_init) (replayed from the same seed, same parameter order). MSAM's only pass is at
    θ − rho·v/‖v‖, which is θ on a first step (no first moment yet; test_msam.py checks a later
    step's statistics)."""
    probe = copy.deepcopy(model)
    optimizer = build(name, model)
    group = optimizer.param_groups[0]
    if isinstance(optimizer, NSO) and not group["lam"] > 0 and optimizer.clean_pass == "when_needed":
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in probe.parameters():
                p.add_(torch.randn_like(p), alpha=group["sigma"])
    if isinstance(optimizer, BSAM):
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in probe.parameters():
                std_inverse = torch.full_like(p, group["s_init"]).mul_(group["num_data"] * group["data_factor"])
                p.addcdiv_(torch.randn_like(p), std_inverse.sqrt_())
    return probe


def first_pass_rows(name: str, x: torch.Tensor) -> torch.Tensor:
    """The rows the step's first pass sees, whose statistics BatchNorm keeps: every row, but for RWP
    with lam < 1 the clean half (``torch.arange(B).tensor_split(2)[0]``) and for bSAM with
    batch_split > 1 its first chunk."""
    optimizer = build(name, mlp())
    if isinstance(optimizer, RWP) and optimizer.passes_per_step == 2:
        return x[torch.arange(len(x)).tensor_split(2)[0]]
    if isinstance(optimizer, BSAM):
        return x[:len(x) // optimizer.batch_split]
    return x


@pytest.mark.parametrize("name", NAMES)
def test_batchnorm_statistics_after_a_step_are_those_of_the_first_pass(name: str):
    model, make_batches = batchnorm_model(name)
    x, y = make_batches(1)[0]
    reference = first_pass_point(name, model, seed=3)
    reference.train()
    with torch.no_grad():
        reference(first_pass_rows(name, x))              # one clean forward (NSO, lam = 0: at θ + U_1)
    torch.manual_seed(3)
    runner = stepper_for(model, build(name, model))
    runner.step(x, y)
    assert runner.passes == METHOD_FACTORIES[name][1]
    buffers = dict(model.named_buffers())
    for key, buffer in reference.named_buffers():
        assert torch.equal(buffer, buffers[key]), key


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_continues_bit_for_bit(name: str):
    data = batches(8)
    model = mlp()
    optimizer = build(name, model)
    train(model, optimizer, data[:3])                    # 3 steps: Lookahead (k=2) has synced once
    twin = copy.deepcopy(model)
    twin_optimizer = build(name, twin)
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    assert twin_optimizer.param_groups is innermost(twin_optimizer).param_groups
    for net, opt in ((model, optimizer), (twin, twin_optimizer)):
        torch.manual_seed(5)                             # the trainer's checkpoint restores the RNG
        train(net, opt, data[3:])
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", NAMES)
def test_a_bf16_autocast_step_runs_and_leaves_finite_parameters(name: str):
    model, make_batches = batchnorm_model(name, dtype=torch.float32)
    before = [p.detach().clone() for p in model.parameters()]
    runner = stepper_for(model, build(name, model), precision="bf16")
    for x, y in make_batches(3, dtype=torch.float32):
        runner.step(x, y)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before))


@pytest.mark.parametrize("name", NAMES)
def test_an_fp16_overflow_in_any_pass_restores_theta_and_skips_the_base_step(name: str):
    """Every pass of a first step (LookSAM's is a SAM step; test_looksam.py overflows its later steps)."""
    x, y = batches(1)[0]
    for overflowing in range(1, METHOD_FACTORIES[name][1] + 1):     # a forward-only call's losses included
        model = mlp()
        optimizer = build(name, model)
        before = [p.detach().clone() for p in model.parameters()]
        scaler = LossScaler(CPU, enabled=True)
        runner = stepper_for(model, optimizer, scaler=scaler, loss_fn=overflow_on_pass(overflowing))
        runner.step(x, y)
        for p, b in zip(model.parameters(), before):
            assert torch.equal(p, b), f"pass {overflowing}"          # θ restored, base step skipped
        assert not innermost(optimizer).state, f"pass {overflowing}"  # no momentum or moments yet
        assert scaler.scale.item() == 2.0 ** 15
        assert getattr(optimizer, "base_steps", 0) == 0               # Lookahead did not count it
        method_state = [t for s in optimizer.state.values() for t in s.values()]
        assert all(torch.isfinite(t).all() for t in method_state)     # TRACER's v is not poisoned
        runner.step(x, y)                                             # the next, clean step goes through
        assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_tracer_leaves_its_fisher_unchanged_when_the_first_pass_overflows():
    x, y = batches(1)[0]
    model = mlp()
    optimizer = TRACER(model.parameters(), torch.optim.SGD, lr=0.1)
    stepper_for(model, optimizer, scaler=LossScaler(CPU, enabled=True), loss_fn=overflow_on_pass(1)).step(x, y)
    for state in optimizer.state.values():
        assert torch.equal(state["v"], torch.zeros_like(state["v"])) and state["t"].item() == 0


def g_tensors(optimizer: torch.optim.Optimizer, model: nn.Module) -> list:
    """The step's ``G``: the gradients, and what else the method gives the gate (bSAM's gs)."""
    return [*(p.grad for p in model.parameters()), *optimizer.gate_tensors()]


def capture_gradients(optimizer: torch.optim.Optimizer, model: nn.Module, store: list):
    """A gate that records the ``G`` the method left in ``.grad`` (and its gate tensors) and skips
    the base step."""
    def gate() -> bool:
        store.append([t.clone() for t in g_tensors(optimizer, model)])
        return False
    return gate


@pytest.mark.parametrize("name", NAMES)
def test_gradient_accumulation_averages_the_micro_batches_own_perturbed_gradients(name: str):
    (x, y), = batches(1)
    halves = [(x[:8], y[:8]), (x[8:], y[8:])]
    model, reference = mlp(), mlp()
    # The reference: each micro-batch's G from θ (base step skipped), then one base step with their mean.
    optimizer = build(name, reference)
    gradients: list = []
    optimizer.base_step_gate = capture_gradients(optimizer, reference, gradients)
    torch.manual_seed(7)
    for xs, ys in halves:
        optimizer.step(closure_for(reference, optimizer, xs, ys, []))

    def mean_gradient() -> bool:
        for tensor, first, second in zip(g_tensors(optimizer, reference), *gradients):
            tensor.copy_((first + second) / 2)
        return True

    optimizer.base_step_gate = mean_gradient
    optimizer.step(closure_for(reference, optimizer, *halves[1], []))
    # The trainer's Stepper with accumulation over the same two micro-batches.
    torch.manual_seed(7)
    runner = stepper_for(model, build(name, model), accumulate=2)
    assert [runner.step(xs, ys)[2] for xs, ys in halves] == [False, True]
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(p, q, rtol=1e-12, atol=1e-14)


@contextlib.contextmanager
def host_synchronisation_forbidden(monkeypatch, allowed: torch.optim.Optimizer):
    """Make every Python-level way of reading a tensor's value on the host raise, except inside
    ``allowed.step`` (the torch base optimizer's own step, e.g. Adam reading its step count)."""
    forbidden = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")
    state = {"on": True}
    originals = {name: getattr(torch.Tensor, name) for name in forbidden}

    def guard(name):
        def method(self, *args, **kwargs):
            if state["on"]:
                raise AssertionError(f"host synchronisation: Tensor.{name} inside step")
            return originals[name](self, *args, **kwargs)
        return method

    base_step = allowed.step

    def unguarded_step(*args, **kwargs):
        state["on"] = False
        try:
            return base_step(*args, **kwargs)
        finally:
            state["on"] = True

    for name in forbidden:
        monkeypatch.setattr(torch.Tensor, name, guard(name))
    monkeypatch.setattr(allowed, "step", unguarded_step)
    try:
        yield
    finally:
        monkeypatch.undo()


#: ESAM with its row selection (gamma < 0.99) reads the selected rows on the host (``nonzero``, and
#: the protocol's CPU index tensor): the one synchronisation the spec lets a method make (§10).
SYNCHRONISES = {"esam"}


@pytest.mark.parametrize("name", [name for name in NAMES if name not in SYNCHRONISES])
def test_step_never_synchronises_with_the_host(name: str, monkeypatch):
    model, make_batches = batchnorm_model(name)
    optimizer = build(name, model)
    data = make_batches(3)
    train(model, optimizer, data[:1])                    # lazily created state exists from here on
    with host_synchronisation_forbidden(monkeypatch, innermost(optimizer)):
        with pytest.raises(AssertionError, match="host synchronisation"):
            bool(torch.ones(()))                         # the guard is armed
        train(model, optimizer, data[1:])


@pytest.mark.parametrize("name", NAMES)
def test_a_step_without_a_closure_is_one_sentence_before_anything_moves(name: str):
    """A host that steps after its own backward (a plain transformers.Trainer) calls ``step()``: it
    was ``'NoneType' object is not callable`` from inside the first pass."""
    model = mlp()
    optimizer = build(name, model)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(TypeError, match=r"\.step needs a closure that recomputes the mini-batch's loss"):
        optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("name", NAMES)
def test_a_parameter_without_gradient_is_left_untouched(name: str):
    model = mlp()
    unused = nn.Parameter(torch.ones(4))
    optimizer = METHOD_FACTORIES[name][0]([*model.parameters(), unused])
    seen = []
    x, y = batches(1)[0]
    inner = closure_for(model, optimizer, x, y, [])

    def closure(**protocol):                             # the extended protocol (FisherMaskSAM, bSAM split)
        seen.append(unused.detach().clone())
        return inner(**protocol)

    closure.batch_size = inner.batch_size

    for _ in range(3):
        optimizer.step(closure)
    assert torch.equal(unused.detach(), torch.ones(4))
    assert unused.grad is None
    if not isinstance(optimizer, (NSO, BSAM)):           # NSO with lam = 0 and bSAM perturb before any pass
        assert all(torch.equal(value, torch.ones(4)) for value in seen)


DEGENERATE = {
    "sam_rho0": (lambda p: SAM(p, torch.optim.SGD, rho=0.0, **SGD_KWARGS), torch.optim.SGD, SGD_KWARGS),
    "asam_rho0": (lambda p: SAM(p, torch.optim.SGD, rho=0.0, adaptive=True, **SGD_KWARGS), torch.optim.SGD,
                  SGD_KWARGS),
    "usam_rho0": (lambda p: SAM(p, torch.optim.SGD, rho=0.0, normalize=False, **SGD_KWARGS), torch.optim.SGD,
                  SGD_KWARGS),
    "sgd_tracer_rho0": (lambda p: TRACER(p, torch.optim.SGD, rho=0.0, **SGD_KWARGS), torch.optim.SGD, SGD_KWARGS),
    "sgd_tracer_lam0": (lambda p: TRACER(p, torch.optim.SGD, lam=0.0, **SGD_KWARGS), torch.optim.SGD, SGD_KWARGS),
    "adam_tracer_rho0": (lambda p: TRACER(p, torch.optim.Adam, rho=0.0, lr=1e-3), torch.optim.Adam, {"lr": 1e-3}),
    "msam_rho0": (lambda p: MSAM(p, torch.optim.SGD, rho=0.0, **SGD_KWARGS), torch.optim.SGD, SGD_KWARGS),
    "nso_sigma0": (lambda p: NSO(p, torch.optim.SGD, sigma=0.0, **SGD_KWARGS), torch.optim.SGD, SGD_KWARGS),
    "nso_sigma0_k2_one_sided": (lambda p: NSO(p, torch.optim.SGD, sigma=0.0, num_perturbs=2, two_sided=False,
                                              **SGD_KWARGS), torch.optim.SGD, SGD_KWARGS),
    "wsam_gamma0": (lambda p: WSAM(p, torch.optim.SGD, gamma=0.0, **SGD_KWARGS), torch.optim.SGD, SGD_KWARGS),
    "wsam_gamma0_coupled": (lambda p: WSAM(p, torch.optim.SGD, gamma=0.0, decouple=False, **SGD_KWARGS),
                            torch.optim.SGD, SGD_KWARGS),
    "gsam_min_f_alpha0": (lambda p: GSAM(p, torch.optim.SGD, alpha=0.0, minimize_fp=False, **SGD_KWARGS),
                          torch.optim.SGD, SGD_KWARGS),
    "gnp_alpha0": (lambda p: GNP(p, torch.optim.SGD, alpha=0.0, **SGD_KWARGS), torch.optim.SGD, SGD_KWARGS),
    "friendly_sam_rho0": (lambda p: FriendlySAM(p, torch.optim.SGD, rho=0.0, **SGD_KWARGS), torch.optim.SGD,
                          SGD_KWARGS),
    "vasso_rho0": (lambda p: VaSSO(p, torch.optim.SGD, rho=0.0, **SGD_KWARGS), torch.optim.SGD, SGD_KWARGS),
    # every row's sharpness is 0: no row above the cutoff, so the second pass takes the whole batch
    "esam_rho0": (lambda p: ESAM(p, torch.optim.SGD, rho=0.0, beta=0.6, gamma=0.5, **SGD_KWARGS), torch.optim.SGD,
                  SGD_KWARGS),
    "rwp_sigma0_lam1": (lambda p: RWP(p, torch.optim.SGD, sigma=0.0, lam=1.0, eta=0.1, **SGD_KWARGS),
                        torch.optim.SGD, SGD_KWARGS),
}


@pytest.mark.parametrize("name", list(DEGENERATE))
def test_zero_radius_or_noise_gives_the_base_optimizer_trajectory_exactly(name: str):
    method, base, kwargs = DEGENERATE[name]
    data = batches(20)
    models = [mlp(batchnorm=True), mlp(batchnorm=True)]
    for model, optimizer in zip(models, (base(models[0].parameters(), **kwargs), method(models[1].parameters()))):
        runner = stepper_for(model, optimizer)
        for x, y in data:
            runner.step(x, y)
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        assert torch.equal(a, b)
