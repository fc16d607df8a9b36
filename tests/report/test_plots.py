"""Figures: learning curves (mean over seeds) and sharpness bars, written as non-empty PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flatmin.report.plots import curves, reading_curve, write_plots
from flatmin.report.runs import find_runs, read_run
from flatmin.report.tables import build_sections
from tests.report.conftest import completed, write_run
from tests.report.sweeps import epochs

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sections(synthetic_runs: Path):
    return build_sections(find_runs([synthetic_runs]))


def test_curves_are_the_mean_and_std_over_seeds(sections):
    sam = next(section for section in sections if section.experiment == "sam_cifar_wrn28")
    found = curves(sam.groups)
    epochs, mean, std = found["val/accuracy"]["sam · cifar10 · wrn28_10 · optimizer.rho=0.05"]
    assert epochs.tolist() == [1, 2, 3]
    assert mean == pytest.approx(0.970 - 0.1 / epochs)  # seeds at 0.970, 0.972, 0.968
    assert std == pytest.approx(np.full(3, 0.002))
    assert set(found) == {"train/loss", "val/accuracy"}  # no run logged val/loss per epoch


def test_every_figure_is_a_non_empty_png(sections, tmp_path: Path):
    written = write_plots(sections, tmp_path)
    assert sorted(path.name for path in written) == ["no_experiment_curves.png", "no_experiment_sharpness.png",
                                                     "sam_cifar_wrn28_curves.png"]  # SAM runs measured no sharpness
    for path in written:
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5_000


def test_a_reading_curve_is_drawn_at_the_mean_reading_of_each_epoch(tmp_path: Path, base_config):
    """Two runs at 100 and 300 passes an epoch: x is the mean reading (200, 400 passes), y the mean and
    std of the metric over the runs."""
    runs = [read_run(write_run(tmp_path / str(passes), base_config, {}, None, completed(0.9),
                               epochs(accuracies, passes=passes)))
            for passes, accuracies in ((100, [0.5, 0.7]), (300, [0.7, 0.9]))]
    x, mean, std = reading_curve(runs, "val/accuracy", "passes")
    assert x.tolist() == [200.0, 400.0] and mean == pytest.approx([0.6, 0.8])
    assert std == pytest.approx([np.std([0.5, 0.7], ddof=1)] * 2)


def test_runs_whose_sharpness_failed_or_left_out_the_hessian_draw_no_bars(tmp_path: Path, base_config):
    """A measurement that failed ({"error": …}) or measured only average sharpness has no trace: it is
    not drawn (and does not break the report); the run that measured the Hessian is."""
    for name, sharpness in (("failed", {"error": "RuntimeError: out of memory"}), ("average", {"average": {}}),
                            ("hessian", {"trace": 12.0, "lambda_max": 3.0})):
        write_run(tmp_path / name, base_config, {"optimizer.rho": {"failed": 0.1, "average": 0.2}.get(name, 0.3)},
                  None, {**completed(0.9), "sharpness": sharpness}, epochs([0.5, 0.9]))
    (section,) = build_sections(find_runs([tmp_path]))
    (path,) = [path for path in write_plots([section], tmp_path) if path.name.endswith("_sharpness.png")]
    assert path.read_bytes()[:8] == PNG
