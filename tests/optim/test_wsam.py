"""WSAM (docs/optimizers.md, "WSAM") against an oracle transcribed from its release
(intelligent-machine-learning/dlrover@05e4f76 atorch/atorch/optimizers/wsam.py, WeightedSAM:
first_step, second_step), in float64; against SAM where it degenerates to it; and against
pytorch_optimizer's WSAM (which clips only g_s)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from flatmin.optim import SAM, WSAM, MultiPassOptimizer, param_groups
from tests.optim.common import (MODELS, SGD_KWARGS, assert_params_equal, batches, closure_for, combine, convnet, grad,
                                image_batches, loss_and_grad, mlp, norm, parameters, train, stepper_for)

#: The release's sam_eps, and torch's clip_grad_norm_ epsilon.
SAM_EPS, CLIP_EPS = 1e-12, 1e-6


def clip(tensors, max_norm):
    """torch.nn.utils.clip_grad_norm_ over all of ``tensors``: x · min(1, max_norm/(‖x‖ + 1e-6))."""
    if max_norm is None:
        return tensors
    return combine((min(1.0, max_norm / (norm(tensors).item() + CLIP_EPS)), tensors))


class ReleaseWSAM:
    """The release's WeightedSAM written out, on its own copy of the parameters, over a torch base
    optimizer (``base(params, **kwargs)``).

    first_step: ``e = rho·S²⊙g/(‖S⊙g‖ + sam_eps)`` (S = |θ| adaptive, else 1) from the unclipped g,
    then g clipped to ``max_norm`` and kept. second_step: back to θ, g_s clipped; coupled
    ``G = alpha·g_s + (1−alpha)·g``; decoupled ``G = g``, base step, ``θ ← θ − lr·alpha·(g_s − g)``.
    ``clip_g=False`` is pytorch_optimizer's variant (g_s clipped, g not).
    """

    def __init__(self, model: nn.Module, base, rho: float, gamma: float, decouple: bool, max_norm: float | None,
                 adaptive: bool = False, clip_g: bool = True, **kwargs) -> None:
        self.model = model
        self.theta = {name: p.detach().clone() for name, p in model.named_parameters()}
        self.base = base(list(self.theta.values()), **kwargs)
        self.rho, self.alpha, self.decouple, self.max_norm = rho, gamma / (1 - gamma), decouple, max_norm
        self.adaptive, self.clip_g = adaptive, clip_g

    def step(self, x, y) -> torch.Tensor:
        theta, alpha = self.theta, self.alpha
        loss, g = loss_and_grad(self.model, theta, x, y)
        s = {n: theta[n].abs() if self.adaptive else torch.ones_like(theta[n]) for n in theta}
        scale = self.rho / (norm({n: s[n] * g[n] for n in g}) + SAM_EPS)
        perturbed = {n: theta[n] + s[n] ** 2 * g[n] * scale for n in theta}
        if self.clip_g:
            g = clip(g, self.max_norm)
        g_s = clip(grad(self.model, perturbed, x, y), self.max_norm)
        if self.decouple:
            sharpness = combine((1.0, g_s), (-1.0, g))
            self._base_step(g)
            lr = self.base.param_groups[0]["lr"]
            with torch.no_grad():
                for name, p in theta.items():
                    p.sub_(lr * alpha * sharpness[name])
        else:
            self._base_step(combine((alpha, g_s), (1 - alpha, g)))
        return loss

    def _base_step(self, gradient) -> None:
        for name, p in self.theta.items():
            p.grad = gradient[name].clone()
        self.base.step()


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("max_norm", [None, 0.05], ids=["no_clip", "clip0.05"])
@pytest.mark.parametrize("decouple", [True, False], ids=["decoupled", "coupled"])
def test_wsam_matches_atorch_release(decouple: bool, max_norm: float | None, model_name: str):
    """Over SGD with momentum and weight decay, where the decoupled form differs from the coupled."""
    make_model, make_batches = MODELS[model_name]
    model = make_model()
    oracle = ReleaseWSAM(model, torch.optim.SGD, rho=0.1, gamma=0.8, decouple=decouple, max_norm=max_norm,
                         **SGD_KWARGS)
    optimizer = WSAM(model.parameters(), torch.optim.SGD, rho=0.1, gamma=0.8, decouple=decouple, max_norm=max_norm,
                     **SGD_KWARGS)
    for x, y in make_batches(5):
        if max_norm is not None:
            assert norm(grad(model, parameters(model), x, y)) > 2 * max_norm       # the clipping bites
        expected_loss = oracle.step(x, y)
        calls: list = []
        loss = optimizer.step(closure_for(model, optimizer, x, y, calls))
        assert len(calls) == 2
        assert torch.allclose(loss, expected_loss, rtol=1e-14)
        assert_params_equal(model, oracle.theta, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("decouple", [True, False], ids=["decoupled", "coupled"])
def test_wsam_over_adam_matches_atorch_release(decouple: bool):
    """On the MLP: before BatchNorm a conv bias has a gradient of rounding noise only, which Adam
    scales up to full steps, so no two orders of summation agree there."""
    model = mlp()
    oracle = ReleaseWSAM(model, torch.optim.Adam, rho=0.05, gamma=0.9, decouple=decouple, max_norm=None, lr=1e-2,
                         weight_decay=1e-3)
    optimizer = WSAM(model.parameters(), torch.optim.Adam, rho=0.05, gamma=0.9, decouple=decouple, lr=1e-2,
                     weight_decay=1e-3)
    for x, y in batches(5):
        oracle.step(x, y)
        optimizer.step(closure_for(model, optimizer, x, y, []))
        assert_params_equal(model, oracle.theta, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_wsam_adaptive_matches_atorch_release(model_name: str):
    """The release's adaptive (e = rho·θ²⊙g/‖|θ|⊙g‖, every tensor) is flatmin's ASAM convention
    with eta = 0 and every tensor adaptive; here with the release's defaults gamma 0.88, max_norm 1."""
    make_model, make_batches = MODELS[model_name]
    model = make_model()
    oracle = ReleaseWSAM(model, torch.optim.SGD, rho=1.0, gamma=0.88, decouple=True, max_norm=1.0, adaptive=True,
                         **SGD_KWARGS)
    optimizer = WSAM(param_groups(model, 5e-4, True, adaptive_tensors="all"), torch.optim.SGD, rho=1.0, gamma=0.88,
                     adaptive=True, eta=0.0, max_norm=1.0, **SGD_KWARGS)
    for x, y in make_batches(5):
        oracle.step(x, y)
        optimizer.step(closure_for(model, optimizer, x, y, []))
        assert_params_equal(model, oracle.theta, rtol=1e-12, atol=1e-14)


def test_wsam_gamma_half_coupled_is_sam():
    """alpha = 1: G = g_s, bit for bit, over SGD with momentum and weight decay (conv net with BN)."""
    data = image_batches(5)
    models = [convnet(), convnet()]
    optimizers = [WSAM(models[0].parameters(), torch.optim.SGD, rho=0.2, gamma=0.5, decouple=False, **SGD_KWARGS),
                  SAM(models[1].parameters(), torch.optim.SGD, rho=0.2, **SGD_KWARGS)]
    for model, optimizer in zip(models, optimizers):
        train(model, optimizer, data)
    for (key, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        assert torch.equal(a, b), key


def test_wsam_gamma_half_decoupled_over_plain_sgd_is_sam():
    """θ − lr·g − lr·(g_s − g) = θ − lr·g_s, to rounding; with momentum it is not SAM."""
    data = image_batches(5)
    for momentum, same in ((0.0, True), (0.9, False)):
        models = [convnet(), convnet()]
        optimizers = [WSAM(models[0].parameters(), torch.optim.SGD, rho=0.2, gamma=0.5, lr=0.1, momentum=momentum),
                      SAM(models[1].parameters(), torch.optim.SGD, rho=0.2, lr=0.1, momentum=momentum)]
        for model, optimizer in zip(models, optimizers):
            train(model, optimizer, data)
        close = all(torch.allclose(a, b, rtol=1e-12, atol=1e-14)
                    for a, b in zip(models[0].parameters(), models[1].parameters()))
        assert close == same


def test_the_decoupled_update_is_skipped_with_the_base_step():
    """When the trainer's gate skips the base step (fp16 overflow, accumulation), nothing moves;
    base_step says whether it ran (docs/optimizers.md, "The base-step gate")."""
    model = mlp()
    optimizer = WSAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1)
    before = parameters(model)
    answers = []
    real_base_step = optimizer.base_step

    def recording_base_step() -> bool:
        answers.append(real_base_step())
        return answers[-1]

    optimizer.base_step = recording_base_step
    optimizer.base_step_gate = lambda: False
    x, y = batches(1)[0]
    optimizer.step(closure_for(model, optimizer, x, y, []))
    assert_params_equal(model, before, rtol=0, atol=0)
    optimizer.base_step_gate = lambda: True
    optimizer.step(closure_for(model, optimizer, x, y, []))
    assert answers == [False, True]
    assert not all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_base_step_tells_whether_it_ran():
    model = mlp()
    optimizer = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    train(model, optimizer, batches(1))
    assert isinstance(optimizer, MultiPassOptimizer) and optimizer.base_step() is True   # no gate
    optimizer.base_step_gate = lambda: False
    assert optimizer.base_step() is False


@pytest.mark.parametrize(("decouple", "buffers"), [(True, 3), (False, 2)])
def test_wsam_keeps_its_listed_buffers_and_no_state(decouple: bool, buffers: int):
    model = mlp()
    optimizer = WSAM(model.parameters(), torch.optim.SGD, decouple=decouple, lr=0.1)
    train(model, optimizer, batches(1))
    size = sum(p.numel() for p in model.parameters())
    assert sum(t.numel() for t in optimizer._scratch.values()) == buffers * size
    assert not optimizer.state


@pytest.mark.parametrize(("setting", "message"), [({"gamma": 1.0}, "gamma must be a number in \\[0, 1\\)"),
                                                   ({"max_norm": 0.0}, "max_norm must be")])
def test_wsam_refuses_settings_out_of_range(setting, message):
    with pytest.raises(ValueError, match=message):
        WSAM(mlp().parameters(), torch.optim.SGD, lr=0.1, **setting)


# -- pytorch_optimizer's WSAM ---------------------------------------------------------------------
@pytest.mark.parametrize("max_norm", [None, 0.05], ids=["no_clip", "clip0.05"])
def test_pytorch_optimizer_wsam_differs_as_documented(max_norm: float | None):
    """pytorch_optimizer 4.1's WSAM sums ‖g‖ in float32 and, with max_norm, clips g_s but not g
    (docs/optimizers.md, "WSAM"). It matches the release's oracle with g unclipped to float32 rounding
    of the ascent (here, after 5 steps: 9.4e-9 unclipped, 1.3e-9 with max_norm 0.05); with max_norm
    it is not flatmin's (the release's) step (2.5 apart here)."""
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    theirs_model, ours_model = convnet(), convnet()
    theirs = pytorch_optimizer.WSAM(theirs_model, theirs_model.parameters(), torch.optim.SGD, rho=0.1, gamma=0.8,
                                    max_norm=max_norm, **SGD_KWARGS)
    oracle = ReleaseWSAM(convnet(), torch.optim.SGD, rho=0.1, gamma=0.8, decouple=True, max_norm=max_norm,
                         clip_g=False, **SGD_KWARGS)
    ours = WSAM(ours_model.parameters(), torch.optim.SGD, rho=0.1, gamma=0.8, max_norm=max_norm, **SGD_KWARGS)
    for x, y in image_batches(5):
        theirs.step(closure_for(theirs_model, theirs, x, y, []))
        oracle.step(x, y)
        ours.step(closure_for(ours_model, ours, x, y, []))
    to_oracle = max((p - oracle.theta[n]).abs().max().item() for n, p in theirs_model.named_parameters())
    to_ours = max((p - q).abs().max().item() for p, q in zip(theirs_model.parameters(), ours_model.parameters()))
    assert to_oracle < 1e-7
    if max_norm is None:
        assert to_ours < 1e-7
    else:
        assert to_ours > 1e-4


# -- DDP: the decoupled term is averaged over the replicas ------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_worker(rank: int, world_size: int, port: int, out: Path) -> None:

    torch.set_default_dtype(torch.float64)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    module = mlp()
    optimizer = WSAM(module.parameters(), torch.optim.SGD, rho=0.1, gamma=0.8, **SGD_KWARGS)
    runner = stepper_for(nn.parallel.DistributedDataParallel(module), optimizer)
    for x, y in batches(3):
        runner.step(x[rank::2], y[rank::2])
    torch.save([p.detach() for p in module.parameters()], out / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_decoupled_wsam_under_ddp_averages_the_sharpness_and_keeps_the_replicas_equal(tmp_path: Path):
    mp.spawn(ddp_worker, args=(2, free_port(), tmp_path), nprocs=2)
    replicas = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    # Each replica's g and g_s from its half; G = the mean g; θ −= lr·alpha·(the mean of g_s − g).
    model = mlp()
    names = [name for name, _ in model.named_parameters()]
    theta = {name: p.detach().clone() for name, p in model.named_parameters()}
    base = torch.optim.SGD(list(theta.values()), **SGD_KWARGS)
    alpha = 0.8 / 0.2
    for x, y in batches(3):
        gs, sharpness = [], []
        for rank in range(2):
            xs, ys = x[rank::2], y[rank::2]
            g = grad(model, theta, xs, ys)
            g_s = grad(model, combine((1.0, theta), (0.1 / (norm(g) + SAM_EPS), g)), xs, ys)
            gs.append(g)
            sharpness.append(combine((1.0, g_s), (-1.0, g)))
        for name, p in theta.items():
            p.grad = (gs[0][name] + gs[1][name]) / 2
        base.step()
        with torch.no_grad():
            for name, p in theta.items():
                p.sub_(0.1 * alpha * (sharpness[0][name] + sharpness[1][name]) / 2)
    for replica in replicas:
        for name, p in zip(names, replica):
            assert torch.allclose(p, theta[name], rtol=1e-11, atol=1e-13), name
    assert all(torch.equal(p, q) for p, q in zip(*replicas))
