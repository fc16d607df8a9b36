"""RAPP (Pethick, Xie & Cevher, NeurIPS 2023, arXiv 2310.13459; docs/optimizers.md, "Lookahead and RAPP") as Lookahead
with a proximal term, against the paper's Algorithm 1 with the inner solver of its §5, in float64."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from flatmin.validation import validate
from flatmin.errors import ConfigError
from flatmin.optim import SAM, Lookahead, build_optimizer, method_label
from tests.conftest import make_config
from tests.optim.common import (MODELS, SGD_KWARGS, batches, closure_for, combine, grad, mlp, parameters,
                                stepper_for)


def transcribe_rapp(model: nn.Module, z, data, gamma: float, tau: int, lam: float, gammas=None):
    """RAPP, Alg. 1: per outer iteration, tau inner iterations ``w ← z − γ∇f(w)`` from ``w = z``, a new
    mini-batch each; then ``z ← (1−λ)z + λw``. Yields the iterate after every inner iteration
    (after the interpolation on the tau-th). ``gammas``: γ per inner iteration (a schedule)."""
    w = z
    for step, (x, y) in enumerate(data):
        gamma_t = gammas[step] if gammas is not None else gamma
        w = combine((1.0, z), (-gamma_t, grad(model, w, x, y)))
        if (step + 1) % tau == 0:
            z = combine((1 - lam, z), (lam, w))
            w = z
        yield w


def assert_at(model: nn.Module, expected, worst: list, rtol: float = 1e-11, atol: float = 1e-12) -> None:
    for name, p in model.named_parameters():
        worst.append((p.detach() - expected[name]).abs().max().item())
        assert torch.allclose(p.detach(), expected[name], rtol=rtol, atol=atol), name


@pytest.mark.parametrize("prox", ["one_over_gamma", "auto"])
@pytest.mark.parametrize("model_name", list(MODELS))
def test_rapp_is_lookahead_over_plain_sgd_with_prox_one_over_gamma(model_name: str, prox: str):
    build_model, build_batches = MODELS[model_name]
    gamma, tau, lam = 0.2, 3, 0.4
    model = build_model()
    optimizer = Lookahead(torch.optim.SGD(model.parameters(), lr=gamma), k=tau, alpha=lam,
                          prox=1 / gamma if prox == "one_over_gamma" else "auto")
    data = build_batches(7)                                  # two outer iterations and one inner step
    worst: list = []
    for (x, y), expected in zip(data, transcribe_rapp(model, parameters(model), data, gamma, tau, lam)):
        optimizer.step(closure_for(model, optimizer, x, y, []))
        assert_at(model, expected, worst)
    print(f"rapp {model_name} {prox}: max |θ − oracle| = {max(worst):.2e}")


def test_rapp_with_two_inner_steps_is_eg_plus():
    """tau = 2 on one batch twice: ``z⁺ = z − λγ∇f(z − γ∇f(z))``, EG+ (the paper's conclusion)."""
    gamma, lam = 0.3, 0.5
    model = mlp()
    optimizer = Lookahead(torch.optim.SGD(model.parameters(), lr=gamma), k=2, alpha=lam, prox=1 / gamma)
    z = parameters(model)
    worst: list = []
    for x, y in batches(4):
        z = combine((1.0, z), (-lam * gamma, grad(model, combine((1.0, z), (-gamma, grad(model, z, x, y))), x, y)))
        for _ in range(2):
            optimizer.step(closure_for(model, optimizer, x, y, []))
        assert_at(model, z, worst)


def test_prox_auto_follows_the_learning_rate_schedule():
    """With ``prox = auto`` each inner step is ``w ← z − lr_t·∇f(w)`` whatever lr_t is."""
    model, tau, lam = mlp(), 3, 0.5
    optimizer = Lookahead(torch.optim.SGD(model.parameters(), lr=0.3), k=tau, alpha=lam, prox="auto")
    factors = [1.0, 0.5, 0.25, 0.1, 0.05, 0.7, 0.3]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: factors[min(step, len(factors) - 1)])
    data = batches(len(factors))
    worst: list = []
    expected_iterates = transcribe_rapp(model, parameters(model), data, 0.0, tau, lam, [0.3 * f for f in factors])
    for (x, y), expected in zip(data, expected_iterates):
        optimizer.step(closure_for(model, optimizer, x, y, []))
        scheduler.step()
        assert_at(model, expected, worst)


def test_the_proximal_term_comes_after_the_trainers_gate():
    """The trainer clips ``G`` in its gate; the term is added after: ``w ← z − γ·clip(∇f(w))``."""
    gamma, tau, lam, clip = 0.2, 3, 0.5, 0.05
    model, reference = mlp(), mlp()
    optimizer = Lookahead(torch.optim.SGD(model.parameters(), lr=gamma), k=tau, alpha=lam, prox="auto")
    runner = stepper_for(model, optimizer, grad_clip_norm=clip)
    z = w = parameters(reference)
    worst: list = []
    for step, (x, y) in enumerate(batches(6)):
        g = grad(reference, w, x, y)
        norm = torch.sqrt(sum((t ** 2).sum() for t in g.values()))
        w = combine((1.0, z), (-gamma * min(1.0, clip / (norm.item() + 1e-6)), g))
        if (step + 1) % tau == 0:
            z = w = combine((1 - lam, z), (lam, w))
        runner.step(x, y)
        assert_at(model, w, worst)


@pytest.mark.parametrize("inner", ["sgd", "sam"])
def test_lookahead_prox_zero_is_plain_lookahead(inner: str):
    """prox = 0 (the default, and optimizer.lookahead.prox: 0.0): Lookahead's steps bit for bit,
    against the rule written with the same torch operations (under the trainer's Stepper)."""
    k, alpha = 3, 0.5

    def fast(params):
        if inner == "sam":
            return SAM(params, torch.optim.SGD, rho=0.05, **SGD_KWARGS)
        return torch.optim.SGD(params, **SGD_KWARGS)

    model, reference = mlp(batchnorm=True), mlp(batchnorm=True)
    runner = stepper_for(model, Lookahead(fast(model.parameters()), k=k, alpha=alpha, prox=0.0))
    plain = stepper_for(reference, fast(reference.parameters()))
    params = list(reference.parameters())
    slow = [p.detach().clone() for p in params]
    for step, (x, y) in enumerate(batches(7), start=1):
        runner.step(x, y)
        plain.step(x, y)
        if step % k == 0:
            with torch.no_grad():
                torch._foreach_lerp_(slow, params, alpha)
                torch._foreach_copy_(params, slow)
    for a, b in zip(model.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(a, b)


def test_the_rapp_option_is_lookahead_over_plain_sgd_with_prox_auto(tmp_path: Path):
    cfg = make_config(tmp_path, "optimizer=rapp")
    validate(cfg)
    optimizer = build_optimizer(cfg.optimizer, mlp())
    assert isinstance(optimizer, Lookahead) and type(optimizer.base_optimizer) is torch.optim.SGD
    assert optimizer.prox == "auto" and (optimizer.k, optimizer.alpha) == (cfg.optimizer.lookahead.k,
                                                                          cfg.optimizer.lookahead.alpha)
    assert {(g["momentum"], g["weight_decay"], g["nesterov"]) for g in optimizer.param_groups} == {(0.0, 0.0, False)}
    assert method_label(OmegaConf.to_container(cfg.optimizer)) == "rapp"
    number = make_config(tmp_path, "optimizer=sgd", "optimizer.lookahead.enabled=true", "optimizer.lookahead.prox=2")
    assert build_optimizer(number.optimizer, mlp()).prox == 2
    assert build_optimizer(make_config(tmp_path, "optimizer=sam", "optimizer.lookahead.enabled=true").optimizer,
                           mlp()).prox == 0.0
    lookahead_sam = make_config(tmp_path, "optimizer=sam", "optimizer.lookahead.enabled=true").optimizer
    assert method_label(OmegaConf.to_container(lookahead_sam)) == "sam"


@pytest.mark.parametrize("value", ["-1", "abc"])
def test_a_bad_prox_is_one_sentence(tmp_path: Path, value: str):
    with pytest.raises(ConfigError, match=rf"^optimizer.lookahead.prox must be a number >= 0 or auto \(1/lr\) "
                                          rf"\(got '?{value}'?\)\.$"):
        validate(make_config(tmp_path, f"optimizer.lookahead.prox={value}"))
    with pytest.raises(ValueError, match="prox must be a number >= 0 or auto"):
        Lookahead(torch.optim.SGD(mlp().parameters(), lr=0.1), prox=-1.0)
