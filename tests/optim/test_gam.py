"""GAM against a direct transcription of its algorithm box in docs/optimizers.md ("GAM"), in float64."""

from __future__ import annotations

import pytest
import torch

from flatmin.optim import GAM
from tests.optim.common import (assert_params_equal, batches, closure_for, combine, grad, mlp, norm, parameters,
                                sgd_step)

XI = 1e-12
HYPER = {"rho": 0.2, "rho_p": 0.05, "alpha": 0.6, "beta": 0.3, "gamma": 0.5}


def dot(a, b):
    return sum((a[n] * b[n]).sum() for n in a)


def transcribe_gam(model, theta, x, y, rho, rho_p, alpha, beta, gamma, variant, lr):
    g0 = grad(model, theta, x, y)
    g1 = grad(model, combine((1.0, theta), (rho_p / (norm(g0) + XI), g0)), x, y)
    h0 = combine((1.0, g1), (-1.0, g0))
    theta2 = combine((1.0, theta), (rho / (norm(h0) + XI), h0))
    g2 = grad(model, theta2, x, y)
    g3 = grad(model, combine((1.0, theta2), (rho_p / (norm(g2) + XI), g2)), x, y)
    h_plus = combine((alpha, g1), (1 - alpha, g3))
    if variant == "released":
        h_minus = combine((1.0, g0), (abs(1 - beta), g2))
    else:
        h_minus = combine((beta, g0), (1 - beta, g2))
    h_perp = combine((1.0, h_minus), (-dot(h_minus, h_plus) / norm(h_plus) ** 2, h_plus))
    return sgd_step(theta, combine((1.0, h_plus), (-gamma, h_perp)), lr)


@pytest.mark.parametrize("variant", ["released", "paper"])
def test_gam_matches_its_algorithm_box_over_five_steps(variant: str):
    model = mlp()
    optimizer = GAM(model.parameters(), torch.optim.SGD, variant=variant, lr=0.1, **HYPER)
    for x, y in batches(5):
        expected = transcribe_gam(model, parameters(model), x, y, variant=variant, lr=0.1, **HYPER)
        calls: list = []
        optimizer.step(closure_for(model, optimizer, x, y, calls))
        assert len(calls) == 4
        assert_params_equal(model, expected)


def test_the_variants_differ_only_in_h_minus():
    """With beta = 1 both read h_minus = g0, so they take the same step; otherwise they differ."""
    x, y = batches(1)[0]
    results = {}
    for variant in ("released", "paper"):
        for beta in (1.0, 0.3):
            model = mlp()
            optimizer = GAM(model.parameters(), torch.optim.SGD, variant=variant, beta=beta, lr=0.1)
            optimizer.step(closure_for(model, optimizer, x, y, []))
            results[variant, beta] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.allclose(results["released", 1.0], results["paper", 1.0], rtol=1e-13, atol=1e-15)
    assert not torch.allclose(results["released", 0.3], results["paper", 0.3], rtol=1e-8, atol=1e-10)


def test_gam_keeps_at_most_four_parameter_sized_buffers():
    model = mlp()
    optimizer = GAM(model.parameters(), torch.optim.SGD, lr=0.1)
    x, y = batches(1)[0]
    optimizer.step(closure_for(model, optimizer, x, y, []))
    size = sum(p.numel() for p in model.parameters())
    assert sum(t.numel() for t in optimizer._scratch.values()) == 3 * size
    assert not optimizer.state


def test_gam_rejects_an_unknown_variant():
    with pytest.raises(ValueError, match="variant"):
        GAM(mlp().parameters(), torch.optim.SGD, variant="other", lr=0.1)
