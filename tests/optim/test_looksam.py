"""LookSAM (docs/optimizers.md, "LookSAM") against the paper's Algorithm 1, written out in float64, and
against pytorch_optimizer's LookSAM, which differs (per-tensor projections, 2 passes every step)."""

from __future__ import annotations

import copy
from fractions import Fraction

import pytest
import torch
from torch import nn

from flatmin.assembly import epochs_within_budget
from flatmin.optim import SAM, Lookahead, LookSAM, build_optimizer
from flatmin.runtime.precision import LossScaler
from tests.conftest import make_config
from tests.optim.common import (CPU, MODELS, SGD_KWARGS, assert_params_equal, batches, closure_for, combine, grad,
                                mlp, norm, parameters, sgd_step, stepper_for, train)
from tests.optim.test_contract import overflow_on_pass

XI = 1e-12


def dot(a, b):
    return sum((a[n] * b[n]).sum() for n in a)


def algorithm_1(model: nn.Module, theta, data, rho: float, k: int, alpha: float, lr: float):
    """LookSAM, Algorithm 1 of Liu et al. (CVPR 2022) with global vectors, over plain SGD: the
    parameters after each step and the passes each step took."""
    trajectory, passes, g_v = [], [], None
    for t, (x, y) in enumerate(data):
        g = grad(model, theta, x, y)
        if t % k == 0:
            g_s = grad(model, combine((1.0, theta), (rho / (norm(g) + XI), g)), x, y)
            g_v = combine((1.0, g_s), (-dot(g_s, g) / (norm(g) ** 2 + XI), g))
            update, count = g_s, 2
        else:
            update, count = combine((1.0, g), (alpha * (norm(g) / (norm(g_v) + XI)), g_v)), 1
        theta = sgd_step(theta, update, lr)
        trajectory.append(theta)
        passes.append(count)
    return trajectory, passes


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("k", [2, 3], ids=["k=2", "k=3"])
def test_looksam_matches_algorithm_1(model_name: str, k: int):
    make_model, make_batches = MODELS[model_name]
    model, data = make_model(), make_batches(7)
    rho, alpha, lr = 0.1, 0.7, 0.1
    expected, expected_passes = algorithm_1(model, parameters(model), data, rho, k, alpha, lr)
    optimizer = LookSAM(model.parameters(), torch.optim.SGD, rho=rho, k=k, alpha=alpha, lr=lr)
    passes = []
    for (x, y), theta in zip(data, expected):
        announced = optimizer.passes_per_step
        passes.append(train(model, optimizer, [(x, y)]))
        assert passes[-1] == announced
        assert_params_equal(model, theta)
    assert passes == expected_passes == [2 if t % k == 0 else 1 for t in range(7)]
    assert optimizer.steps == 7 and optimizer.mean_passes_per_step == Fraction(k + 1, k)


def test_looksam_k1_is_sam():
    data = batches(6)
    models = [mlp(batchnorm=True), mlp(batchnorm=True)]
    optimizers = [LookSAM(models[0].parameters(), torch.optim.SGD, rho=0.05, k=1, **SGD_KWARGS),
                  SAM(models[1].parameters(), torch.optim.SGD, rho=0.05, **SGD_KWARGS)]
    for model, optimizer in zip(models, optimizers):
        runner = stepper_for(model, optimizer)
        for x, y in data:
            runner.step(x, y)
        assert runner.passes == 12
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        assert torch.equal(a, b)


def test_looksam_honours_perturb_groups_and_mixes_over_every_tensor():
    """Only the perturbed groups move on SAM steps (‖g‖ of the ascent is theirs); g_v's projection
    and the reuse steps' norms are over every tensor with a gradient."""
    model, data = MODELS["convbn"][0](), MODELS["convbn"][1](5)
    on = {name for name in parameters(model) if name.startswith("1.")}           # the BatchNorm layer
    groups = [{"params": [p for n, p in model.named_parameters() if (n in on) == flag], "perturb": flag}
              for flag in (True, False)]
    optimizer = LookSAM(groups, torch.optim.SGD, rho=0.5, k=2, alpha=0.7, lr=0.1)
    theta, g_v = parameters(model), None
    for t, (x, y) in enumerate(data):
        g = grad(model, theta, x, y)
        if t % 2 == 0:
            scale = 0.5 / (norm({n: g[n] for n in on}) + XI)
            g_s = grad(model, {n: theta[n] + (scale * g[n] if n in on else 0) for n in theta}, x, y)
            g_v = combine((1.0, g_s), (-dot(g_s, g) / (norm(g) ** 2 + XI), g))
            update = g_s
        else:
            update = combine((1.0, g), (0.7 * norm(g) / (norm(g_v) + XI), g_v))
        theta = sgd_step(theta, update, 0.1)
        optimizer.step(closure_for(model, optimizer, x, y, []))
        assert_params_equal(model, theta)


def test_looksam_state_is_t_and_g_v_and_survives_a_checkpoint():
    model = mlp()
    optimizer = LookSAM(model.parameters(), torch.optim.SGD, k=3, **SGD_KWARGS)
    train(model, optimizer, batches(4))
    state = copy.deepcopy(optimizer.state_dict())
    assert state["steps"] == 4
    assert all(set(s) == {"g_v"} for s in state["method"]["state"].values())
    fresh = LookSAM(mlp().parameters(), torch.optim.SGD, k=3, **SGD_KWARGS)
    assert fresh.passes_per_step == 2
    fresh.load_state_dict(state)
    assert fresh.steps == 4 and fresh.passes_per_step == 1


def test_an_overflow_leaves_t_and_g_v_as_they_were():
    """An fp16 overflow skips the base step: the step does not count (t stays, so the next step is
    of the same kind) and a SAM step's new g_v is not kept."""
    x, y = batches(1)[0]
    # k = 2: step t = 0 (SAM) takes passes 1-2, t = 1 (reuse) pass 3, t = 2 (SAM) passes 4-5.
    for overflowing, kind in ((3, "reuse"), (4, "sam"), (5, "sam")):
        model = mlp()
        optimizer = LookSAM(model.parameters(), torch.optim.SGD, k=2, **SGD_KWARGS)
        scaler = LossScaler(CPU, enabled=True)
        runner = stepper_for(model, optimizer, scaler=scaler, loss_fn=overflow_on_pass(overflowing))
        runner.step(x, y)                                            # t = 0: a SAM step, clean
        if kind == "sam":
            runner.step(x, y)                                        # t = 1: a reuse step, clean
        steps, g_v = optimizer.steps, [s["g_v"].clone() for s in optimizer.state.values()]
        before = [p.detach().clone() for p in model.parameters()]
        passes = runner.passes
        runner.step(x, y)                                            # overflows
        assert runner.passes - passes == (1 if kind == "reuse" else 2)
        assert optimizer.steps == steps
        assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
        assert all(torch.equal(s["g_v"], v) for s, v in zip(optimizer.state.values(), g_v))
        passes = runner.passes
        runner.step(x, y)                                            # the same kind of step, now taken
        assert runner.passes - passes == (1 if kind == "reuse" else 2)
        assert optimizer.steps == steps + 1


def test_gradient_accumulation_keeps_the_micro_batches_of_a_step_of_one_kind():
    model = mlp()
    runner = stepper_for(model, LookSAM(model.parameters(), torch.optim.SGD, k=2, **SGD_KWARGS), accumulate=2)
    counts = []
    for x, y in batches(6):
        passes = runner.passes
        runner.step(x[:8], y[:8])
        counts.append(runner.passes - passes)
    assert counts == [2, 2, 1, 1, 2, 2]                              # 1 + 1/k per micro-batch on average


def test_a_pass_budget_counts_looksam_at_one_plus_one_over_k_passes(tmp_path):
    model = mlp()
    assert LookSAM(model.parameters(), torch.optim.SGD, k=5, lr=0.1).mean_passes_per_step == Fraction(6, 5)
    wrapped = Lookahead(LookSAM(model.parameters(), torch.optim.SGD, k=4, lr=0.1))
    assert wrapped.mean_passes_per_step == Fraction(5, 4) and wrapped.passes_per_step == 2
    for budget, k, epochs in ((6, 5, 5), (12, 5, 10), (4, 5, 3), (30, 2, 20), (2, 1, 1)):
        cfg = make_config(tmp_path, "optimizer=looksam", f"optimizer.k={k}", f"trainer.budget_passes={budget}")
        optimizer = build_optimizer(cfg.optimizer, mlp())
        assert epochs_within_budget(cfg.trainer, optimizer) == epochs   # exact: 6 // 1.2 in floats is 4


# -- pytorch_optimizer's LookSAM -----------------------------------------------------------------------
def pytorch_optimizer_looksam(model: nn.Module, theta, data, rho: float, k: int, alpha: float, lr: float):
    """pytorch_optimizer 4.1.0's LookSAM written out (its non-foreach path, over plain SGD): the
    ascent's global norm summed in float32; per tensor, g_v = g_s − ‖g_s‖·⟨ĝ, ĝ_s⟩·ĝ on SAM steps
    and G = g + alpha·‖g‖/(‖g_v‖ + 1e-8)·g_v on the others (each tensor its own norms)."""
    trajectory, g_v = [], None
    for t, (x, y) in enumerate(data):
        g = grad(model, theta, x, y)
        if t % k == 0:
            squared = torch.stack([g[n].norm() for n in g]).float().square().sum()
            scale = (rho / (squared.sqrt() + XI)).double()
            g_s = grad(model, {n: theta[n] + g[n] * scale for n in theta}, x, y)
            g_v = {}
            for n in g:
                unit, unit_s = g[n] / g[n].norm().clamp_min(XI), g_s[n] / g_s[n].norm().clamp_min(XI)
                g_v[n] = g_s[n] - g_s[n].norm() * (unit * unit_s).sum() * unit
            update = g_s
        else:
            update = {n: g[n] + alpha * (g[n].norm() / (g_v[n].norm() + 1e-8) * g_v[n]) for n in g}
        theta = sgd_step(theta, update, lr)
        trajectory.append(theta)
    return trajectory


@pytest.mark.parametrize("model_name", list(MODELS))
def test_pytorch_optimizer_looksam_projects_per_tensor_and_takes_two_passes_every_step(model_name: str):
    from pytorch_optimizer import LookSAM as ReferenceLookSAM

    make_model, make_batches = MODELS[model_name]
    rho, k, alpha, lr = 0.1, 3, 0.7, 0.1
    data = make_batches(7)
    reference_model, model = make_model(), make_model()
    per_tensor = pytorch_optimizer_looksam(reference_model, parameters(reference_model), data, rho, k, alpha, lr)
    global_vectors, _ = algorithm_1(model, parameters(model), data, rho, k, alpha, lr)
    reference = ReferenceLookSAM(reference_model.parameters(), torch.optim.SGD, rho=rho, k=k, alpha=alpha, lr=lr)
    calls: list = []
    for (x, y), theta in zip(data, per_tensor):
        closure = closure_for(reference_model, reference, x, y, calls)
        closure()                                            # its protocol: the gradient at θ first
        reference.step(closure)
        assert_params_equal(reference_model, theta)
    assert len(calls) == 2 * len(data)                       # the reuse steps run the closure again
    optimizer = LookSAM(model.parameters(), torch.optim.SGD, rho=rho, k=k, alpha=alpha, lr=lr)
    assert train(model, optimizer, data) == 7 + 3            # SAM steps at t = 0, 3, 6
    assert_params_equal(model, global_vectors[-1])
    gap = max((p.detach() - q.detach()).abs().max().item()
              for p, q in zip(model.parameters(), reference_model.parameters()))
    print(f"max |flatmin - pytorch_optimizer| after 7 steps: {gap:.3g}")
    assert gap > 1e-4, gap                                   # the two algorithms part ways after the first reuse step


# -- what LookSAM added to MultiPassOptimizer (flatmin/optim/multipass.py) ----------------------------
def test_mean_passes_per_step_is_the_constant_count_of_the_other_methods():
    from tests.optim.common import METHOD_FACTORIES

    varying = {"looksam": Fraction(3, 2),                                     # its k = 2
               "fisher_mask_sam": Fraction(2 * 2 + 4, 2),                       # mask_every 2, num_samples 4
               "fisher_mask_sam_every_step": Fraction(2 + 3)}                   # mask_every 1, num_samples 3
    for name, (factory, passes) in METHOD_FACTORIES.items():
        optimizer = factory(mlp().parameters())
        assert optimizer.mean_passes_per_step == varying.get(name, passes), name


def test_base_step_tells_whether_it_ran():
    model = mlp()
    optimizer = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    x, y = batches(1)[0]
    closure_for(model, optimizer, x, y, [])()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.base_step_gate = lambda: False
    assert optimizer.base_step() is False
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    optimizer.base_step_gate = None
    assert optimizer.base_step() is True
    assert not all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
