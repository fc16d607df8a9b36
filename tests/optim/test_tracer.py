"""SGD-TRACER and Adam-TRACER against the project's formulation in docs/optimizers.md, in float64."""

from __future__ import annotations

import pytest
import torch

from flatmin.optim import TRACER
from tests.optim.common import assert_params_equal, batches, closure_for, combine, grad, mlp, norm, parameters


class TracerTranscription:
    """The formulation written out, with its own running Fisher ``v`` and step count ``t``."""

    def __init__(self, rho: float, lam: float, beta2: float, delta: float) -> None:
        self.rho, self.lam, self.beta2, self.delta = rho, lam, beta2, delta
        self.v, self.t = None, 0

    def gradient(self, model, theta, x, y):
        g = grad(model, theta, x, y)
        self.t += 1
        previous = self.v or {n: torch.zeros_like(t) for n, t in g.items()}
        self.v = {n: self.beta2 * previous[n] + (1 - self.beta2) * g[n] ** 2 for n in g}
        d = {n: 1 / (torch.sqrt(self.v[n] / (1 - self.beta2 ** self.t)) + self.delta) for n in g}
        scaled_norm = norm({n: torch.sqrt(d[n]) * g[n] for n in g})
        e = {n: self.rho * d[n] * g[n] / scaled_norm for n in g}
        g_e = grad(model, combine((1.0, theta), (1.0, e)), x, y)
        return combine((1 - self.lam, g), (self.lam, g_e))


def adam_transcription(lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
    """Adam (Kingma & Ba), written out, as the base step of Adam-TRACER."""
    moments = {"m": None, "s": None, "t": 0}

    def step(theta, g):
        moments["t"] += 1
        t = moments["t"]
        m = moments["m"] or {n: torch.zeros_like(x) for n, x in g.items()}
        s = moments["s"] or {n: torch.zeros_like(x) for n, x in g.items()}
        moments["m"] = {n: betas[0] * m[n] + (1 - betas[0]) * g[n] for n in g}
        moments["s"] = {n: betas[1] * s[n] + (1 - betas[1]) * g[n] ** 2 for n in g}
        return {n: theta[n] - lr * (moments["m"][n] / (1 - betas[0] ** t))
                / (torch.sqrt(moments["s"][n] / (1 - betas[1] ** t)) + eps) for n in g}

    return step


@pytest.mark.parametrize("lam", [1.0, 0.4])
@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_tracer_matches_its_formulation_over_five_steps(base: str, lam: float):
    model = mlp()
    hyper = {"rho": 0.05, "lam": lam, "beta2": 0.99, "delta": 1e-8}
    if base == "sgd":
        optimizer = TRACER(model.parameters(), torch.optim.SGD, lr=0.1, **hyper)
        base_step = lambda theta, g: combine((1.0, theta), (-0.1, g))      # noqa: E731
    else:
        optimizer = TRACER(model.parameters(), torch.optim.Adam, lr=0.01, **hyper)
        base_step = adam_transcription(lr=0.01)
    transcription = TracerTranscription(**hyper)
    for x, y in batches(5):
        theta = parameters(model)
        expected = base_step(theta, transcription.gradient(model, theta, x, y))
        calls: list = []
        optimizer.step(closure_for(model, optimizer, x, y, calls))
        assert len(calls) == 2
        assert_params_equal(model, expected)
    for name, p in model.named_parameters():          # TRACER's own v, not Adam's second moment
        assert torch.allclose(optimizer.state[p]["v"], transcription.v[name], rtol=1e-12, atol=1e-20)


def test_tracer_keeps_two_buffers_at_lam_one_and_three_below():
    size = sum(p.numel() for p in mlp().parameters())
    for lam, expected in ((1.0, 2), (0.5, 3)):
        model = mlp()
        optimizer = TRACER(model.parameters(), torch.optim.SGD, lam=lam, lr=0.1)
        x, y = batches(1)[0]
        optimizer.step(closure_for(model, optimizer, x, y, []))
        scratch = sum(t.numel() for t in optimizer._scratch.values())
        state = sum(s["v"].numel() for s in optimizer.state.values())
        assert scratch + state == expected * size
