"""The matrix-sensing study: the problem is what it claims, and every method runs through flatmin's optimizers."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from flatmin.studies import matrix_sensing as study


def test_the_problem_is_a_rank_r_truth_measured_by_symmetric_gaussians():
    problem = study.Problem.generate(d=10, r=2, m=50, seed=0)
    assert torch.linalg.matrix_rank(problem.truth) == 2
    assert torch.allclose(problem.sensing, problem.sensing.transpose(1, 2))
    assert torch.allclose(problem.targets, (problem.sensing * problem.truth).sum(dim=(1, 2)))
    factor = torch.linalg.cholesky(problem.truth + 1e-12 * torch.eye(10))
    assert float(problem.loss(factor)) < 1e-20 and problem.test_loss(factor) < 1e-10


def test_a_small_study_runs_every_method_and_reports_them(tmp_path: Path):
    results = study.run_study(seeds=[0, 1], d=8, r=1, m=60, sigma=0.02, lr=0.02, steps=120, init=1.0)
    assert list(results) == list(study.METHODS)
    for result in results.values():
        assert len(result["curves"]) == 2 and len(result["train"]) == 2
        assert all(len(curve) == 4 and all(math.isfinite(v) for v in curve) for curve in result["curves"])
    gd, one_sided, two_sided = (results[m]["curves"][0] for m in study.METHODS)
    assert gd[0] == one_sided[0] == two_sided[0]          # the same seeded start for every method
    assert len({gd[-1], one_sided[-1], two_sided[-1]}) == 3  # the noise changes the trajectory
    table = study.table(results)
    assert table.count("\n| ") == 3 and all(method in table for method in study.METHODS)
    study.plot(results, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000
