"""Over-parameterised matrix sensing: two-sided NSO against one-sided noise injection and plain GD.

The NSO paper (Li, Ju & Zhang, arXiv 2306.08553) shows on this problem that averaging the
gradients at θ+U and θ−U reaches a lower test loss than injecting one-sided noise or none. The
setting is that of Li, Ma & Zhang (COLT 2018): a rank-``r`` PSD ground truth ``X* = U* U*ᵀ`` in
``d×d``, ``m`` symmetric Gaussian measurements ``y_i = ⟨A_i, X*⟩``, and a full ``d×d`` factor
``U`` (over-parameterised) fitted by gradient descent on

    L(U) = 1/(2m) · Σ_i (⟨A_i, U Uᵀ⟩ − y_i)²,      test loss = ‖U Uᵀ − X*‖²_F / ‖X*‖²_F.

With a large initialisation GD fits the measurements with a high-rank ``U Uᵀ`` and generalises
poorly; noise steers it towards flatter, lower-rank solutions. Each method is flatmin's own
optimizer driven through the ``step(closure)`` contract: GD is ``torch.optim.SGD`` on the full
batch, one-sided noise is ``NSO(two_sided=False)``, NSO is ``NSO(two_sided=True)``.

    python -m flatmin.studies.matrix_sensing [--out docs/study] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from flatmin.optim import NSO

METHODS = ("GD", "one-sided noise", "NSO (two-sided)")


@dataclass(frozen=True)
class Problem:
    """Measurements ``y = ⟨A, X*⟩`` of a rank-``r`` ground truth ``X*``."""

    sensing: Tensor      # (m, d, d), symmetric
    targets: Tensor      # (m,)
    truth: Tensor        # (d, d)

    @classmethod
    def generate(cls, d: int, r: int, m: int, seed: int) -> "Problem":
        generator = torch.Generator().manual_seed(seed)
        factor = torch.randn(d, r, generator=generator, dtype=torch.float64) / d ** 0.5
        truth = factor @ factor.T
        sensing = torch.randn(m, d, d, generator=generator, dtype=torch.float64)
        sensing = (sensing + sensing.transpose(1, 2)) / 2
        return cls(sensing, torch.einsum("mij,ij->m", sensing, truth), truth)

    def loss(self, factor: Tensor) -> Tensor:
        residual = torch.einsum("mij,ij->m", self.sensing, factor @ factor.T) - self.targets
        return 0.5 * residual.pow(2).mean()

    def test_loss(self, factor: Tensor) -> float:
        with torch.no_grad():
            return float((factor @ factor.T - self.truth).norm() ** 2 / self.truth.norm() ** 2)


RECORD_EVERY = 50


def fit(problem: Problem, method: str, sigma: float, lr: float, steps: int, init: float,
        seed: int) -> tuple[list[float], float]:
    """Run ``method`` from a seeded ``init``-scaled start; returns the test loss after every
    ``RECORD_EVERY`` steps (from step 0; the last entry is the final model's) and the final
    training loss."""
    torch.manual_seed(seed)
    d = problem.truth.shape[0]
    factor = torch.nn.Parameter(init * torch.randn(d, d, dtype=torch.float64) / d ** 0.5)
    if method == "GD":
        optimizer: torch.optim.Optimizer = torch.optim.SGD([factor], lr=lr)
    else:
        optimizer = NSO([factor], torch.optim.SGD, sigma=sigma, two_sided=method == "NSO (two-sided)", lr=lr)

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = problem.loss(factor)
        loss.backward()
        return loss

    curve = [problem.test_loss(factor)]
    for step in range(1, steps + 1):
        optimizer.step(closure)
        if step % RECORD_EVERY == 0 or step == steps:
            curve.append(problem.test_loss(factor))
    return curve, float(problem.loss(factor.detach()))


def run_study(seeds: list[int], d: int, r: int, m: int, sigma: float, lr: float, steps: int,
              init: float) -> dict[str, dict[str, list]]:
    """Every method on one problem (seed 0 of the data) from each seed's start."""
    problem = Problem.generate(d, r, m, seed=1000)
    results: dict[str, dict[str, list]] = {}
    for method in METHODS:
        runs = [fit(problem, method, sigma, lr, steps, init, seed) for seed in seeds]
        results[method] = {"curves": [curve for curve, _ in runs], "train": [train for _, train in runs]}
    return results


def table(results: dict[str, dict[str, list]]) -> str:
    """Markdown: final train and test loss per method, mean ± std over seeds."""
    def cell(values: list[float]) -> str:
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.2e} ± {spread:.1e}"

    lines = ["| method | train loss | test loss (‖UUᵀ−X*‖²/‖X*‖²) |", "|---|---|---|"]
    for method, result in results.items():
        lines.append(f"| {method} | {cell(result['train'])} | {cell([c[-1] for c in result['curves']])} |")
    return "\n".join(lines)


def plot(results: dict[str, dict[str, list]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.5))
    for method, result in results.items():
        curves = torch.tensor(result["curves"])
        axis.plot([RECORD_EVERY * i for i in range(curves.shape[1])], curves.mean(0).tolist(), label=method)
    axis.set(xlabel="step", ylabel="test loss", yscale="log", title="over-parameterised matrix sensing")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--d", type=int, default=30)
    parser.add_argument("--r", type=int, default=3)
    parser.add_argument("--m", type=int, default=450, help="number of measurements (5·d·r)")
    parser.add_argument("--sigma", type=float, default=0.02)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--init", type=float, default=1.0, help="scale of the initial factor")
    parser.add_argument("--out", type=Path, help="write matrix_sensing.md and matrix_sensing.png here")
    args = parser.parse_args()
    results = run_study(args.seeds, args.d, args.r, args.m, args.sigma, args.lr, args.steps, args.init)
    text = (f"Matrix sensing, d={args.d}, r={args.r}, m={args.m}, sigma={args.sigma}, lr={args.lr}, "
            f"{args.steps} full-batch steps, init scale {args.init}, seeds {args.seeds}\n\n{table(results)}")
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "matrix_sensing.md").write_text(text + "\n")
        plot(results, args.out / "matrix_sensing.png")


if __name__ == "__main__":
    main()
