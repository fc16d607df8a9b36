"""Grouping by everything but the seed, and the papers' layouts with the published numbers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from flatmin.report.published import BEST_EPOCH_ON_TEST, GAM_CIFAR, PAPER_TABLES, SAM_CIFAR_WRN28
from flatmin.report.runs import find_runs
from flatmin.report.tables import build_sections
from tests.conftest import CONF
from tests.report.conftest import completed, write_run

T_975_DF2, T_975_DF1 = 4.302652729749464, 12.706204736174698
BASIC = "WRN-28-10 (200 epochs) · basic"


@pytest.fixture(scope="module")
def sections(synthetic_runs: Path):
    return {section.experiment: section for section in build_sections(find_runs([synthetic_runs]))}


def test_groups_differ_by_settings_not_by_seed(sections):
    labels = [group.label for group in sections["sam_cifar_wrn28"].groups]
    assert labels == ["sam · cifar10 · wrn16_8", "sam · cifar10 · wrn28_10 · optimizer.rho=0.05",
                      "sam · cifar10 · wrn28_10 · optimizer.rho=0.1", "sam · cifar100 · wrn28_10",
                      "sgd · cifar10 · wrn28_10"]
    assert [len(group.runs) for group in sections["sam_cifar_wrn28"].groups] == [1, 3, 2, 1, 2]
    assert [(group.label, len(group.runs)) for group in sections[None].groups] == [("sgd · digits · small_cnn", 2)]


def test_the_sam_table_has_the_papers_order_numbers_and_differences(sections):
    paper, outside, detail = sections["sam_cifar_wrn28"].tables
    assert paper.columns == ["C10 SAM", "C10 SGD", "C100 SAM", "C100 SGD"]
    assert paper.rows == [BASIC, f"{BASIC} · optimizer.rho=0.05", f"{BASIC} · optimizer.rho=0.1",
                          "WRN-28-10 (200 epochs) · cutout", "WRN-28-10 (200 epochs) · AutoAugment",
                          "PyramidNet · basic", "PyramidNet+ShakeDrop · basic"]

    sam = paper.entries[(f"{BASIC} · optimizer.rho=0.05", "C10 SAM")]  # test errors 3.0, 2.8, 3.2 (%)
    assert (sam.ours.n, sam.ours.mean, sam.ours.std) == (3, pytest.approx(3.0), pytest.approx(0.2))
    assert sam.ours.ci_high - sam.ours.mean == pytest.approx(T_975_DF2 * 0.2 / math.sqrt(3))
    assert sam.published == 2.7
    sgd = paper.entries[(BASIC, "C10 SGD")]  # 3.5, 3.3
    assert (sgd.ours.mean, sgd.ours.std, sgd.published) == (pytest.approx(3.4), pytest.approx(math.sqrt(0.02)), 3.5)
    assert sgd.ours.ci_low == pytest.approx(3.4 - T_975_DF1 * math.sqrt(0.02) / math.sqrt(2))
    cutout = paper.entries[("WRN-28-10 (200 epochs) · cutout", "C100 SAM")]
    assert (cutout.ours.n, cutout.ours.mean, cutout.ours.std, cutout.published) == (1, pytest.approx(15.0), None, 14.9)
    not_run = paper.entries[("PyramidNet+ShakeDrop · basic", "C100 SGD")]
    assert (not_run.ours, not_run.published) == (None, 14.5)
    assert len([entry for entry in paper.entries.values() if entry.published is not None]) == 20 + 2
    assert paper.compare and paper.notes == SAM_CIFAR_WRN28.notes

    assert outside.title.startswith("Configurations outside the paper's layout")
    assert (outside.rows, outside.columns) == (["sam"], ["cifar10"])
    assert outside.entries[("sam", "cifar10")].ours.mean == pytest.approx(96.0)
    assert detail.rows == [group.label for group in sections["sam_cifar_wrn28"].groups]


def test_the_detail_table_has_every_metric_including_sharpness(sections):
    generic, detail = sections[None].tables
    assert (generic.rows, generic.columns) == (["sgd"], ["digits"])
    assert detail.columns == ["test/accuracy, final model (%)", "test/loss, final model",
                              "test/accuracy, best-validation model (%)", "test/loss, best-validation model",
                              "val/accuracy, final epoch (%)", "val/accuracy, best epoch (%)", "val/loss, best epoch",
                              "λ_max", "m-sharpness", "Hessian trace"]
    row = "sgd · digits · small_cnn"
    assert detail.entries[(row, "test/accuracy, final model (%)")].ours.mean == pytest.approx(96.0)
    trace = detail.entries[(row, "Hessian trace")].ours
    assert (trace.mean, trace.std) == (pytest.approx(105.0), pytest.approx(math.sqrt(50)))
    assert detail.entries[(row, "m-sharpness")].ours.mean == pytest.approx(0.15)


def test_hessian_tables_are_in_the_papers_units(tmp_path: Path, base_config):
    for seed, (lambda_max, trace) in enumerate(((700.0, 2700.0), (600.0, 2900.0))):
        choices = {"experiment": "nso_finetune", "optimizer": "nso", "dataset": "indoor67",
                   "model": "resnet34_imagenet"}
        write_run(tmp_path / f"nso{seed}", base_config, {"seed": seed}, choices,
                  completed(0.8, sharpness={"lambda_max": lambda_max, "trace": trace}))
    (section,) = build_sections(find_runs([tmp_path]))
    accuracy, lambdas, traces, detail = section.tables
    assert accuracy.entries[("MIT Indoor-67", "NSO")].ours.mean == pytest.approx(80.0)
    assert accuracy.entries[("MIT Indoor-67", "NSO")].published is None  # not available: never invented
    assert lambdas.title.endswith("λ1 (×10³)") and traces.title.endswith("trace (×10⁴)")
    assert lambdas.rows == ["MIT Indoor-67", "Caltech-256", "FGVC-Aircraft", "CIFAR-10"]
    assert lambdas.columns == ["NSO", "SAM", "SGD"]
    indoor = lambdas.entries[("MIT Indoor-67", "NSO")]
    assert (indoor.ours.mean, indoor.published) == (pytest.approx(0.65), 0.65)
    assert traces.entries[("MIT Indoor-67", "NSO")].ours.mean == pytest.approx(0.28)


def test_the_best_epoch_on_test_is_shown_only_when_asked(gam_runs: Path):
    runs = find_runs([gam_runs])
    (plain,) = build_sections(runs)
    assert [table.title for table in plain.tables] == [f"{GAM_CIFAR.title}: test accuracy (%), final model",
                                                       "Every configuration"]
    assert not any(metric.selected_on_test for table in plain.tables for metric in table.metrics.values())

    final, best, detail = build_sections(runs, best_on_test=True)[0].tables
    assert best.title == f"{GAM_CIFAR.title}: test accuracy (%), {BEST_EPOCH_ON_TEST}"
    assert (best.rows, best.columns) == (final.rows, final.columns) == (["ResNet-18 · GAM"], ["CIFAR-10"])
    cell = ("ResNet-18 · GAM", "CIFAR-10")
    assert (best.entries[cell].ours.n, best.entries[cell].ours.mean) == (2, pytest.approx(96.75))
    assert final.entries[cell].ours.mean == pytest.approx(94.5)
    column = f"test/accuracy, {BEST_EPOCH_ON_TEST} (%)"
    assert detail.columns[:5] == ["test/accuracy, final model (%)", "test/loss, final model",
                                  "test/accuracy, best-validation model (%)", "test/loss, best-validation model",
                                  column]
    assert detail.entries[("gam · cifar10 · resnet18", column)].ours.mean == pytest.approx(96.75)


def test_published_tables_cover_the_experiments_and_only_known_cells():
    experiments = {table.experiment for table in PAPER_TABLES}
    assert experiments == {"sam_cifar_wrn28", "sam_cifar_wrn16", "gam_cifar", "nso_finetune", "nso_glue_mrpc",
                           "tracer_label_noise_cifar", "tracer_glue", "fsam_cifar100"}
    for table in PAPER_TABLES:
        rows, columns = {row.label for row in table.rows}, {column.label for column in table.columns}
        assert all(row in rows and column in columns for row, column in table.published), table.title
    glue = next(table for table in PAPER_TABLES if table.experiment == "tracer_glue")
    assert len(glue.published) == 13 and glue.published[("AdamW (bert-base reference)", "MRPC F1")] == 89.47


def test_every_model_dataset_and_method_a_table_selects_is_a_config_option():
    groups = {"model": "model", "dataset": "dataset", "method": "optimizer"}
    for table in PAPER_TABLES:
        for heading in table.rows + table.columns:
            for key, group in groups.items():
                accepted = heading.match.get(key, ())
                for option in accepted if isinstance(accepted, tuple) else (accepted,):
                    assert (CONF / group / f"{option}.yaml").is_file(), f"{table.title}: {key}={option}"


def glue_summary(accuracy: float, f1: float) -> dict:
    """A completed GLUE run: no labelled test split, the dev set evaluated as val."""
    final = {"val/accuracy": accuracy, "val/f1": f1, "val/loss": 0.4}
    return {"status": "completed", "final": final, "best_val": final, "test": {}}


def test_glue_tables_read_the_final_dev_metrics(tmp_path: Path, base_config):
    for seed, (accuracy, f1) in enumerate(((0.85, 0.89), (0.86, 0.90))):
        for experiment in ("nso_glue_mrpc", None):
            write_run(tmp_path / f"{experiment}_{seed}", base_config, {"seed": seed},
                      {"experiment": experiment, "optimizer": "adamw", "dataset": "glue/mrpc", "model": "bert"},
                      glue_summary(accuracy, f1))
    paper_section, plain_section = build_sections(find_runs([tmp_path]))
    paper = paper_section.tables[0]
    assert (paper.rows, paper.columns) == (["AdamW (bert-base reference)"], ["MRPC F1", "MRPC acc"])
    f1 = paper.entries[("AdamW (bert-base reference)", "MRPC F1")]
    assert (f1.ours.mean, f1.published) == (pytest.approx(89.5), 89.47)
    assert paper.entries[("AdamW (bert-base reference)", "MRPC acc")].ours.mean == pytest.approx(85.5)
    generic = plain_section.tables[0]
    assert generic.title == "validation accuracy (%), final epoch"  # no test split: the dev set's
    assert generic.entries[("adamw", "glue/mrpc")].ours.mean == pytest.approx(85.5)


def test_asam_is_sam_with_adaptive_true(tmp_path: Path, base_config):
    settings = {"optimizer.name": "sam", "optimizer.adaptive": True, "optimizer.rho": 2.0, "optimizer.eta": 0.0}
    write_run(tmp_path / "asam", base_config, settings,
              {"experiment": "sam_cifar_wrn16", "optimizer": "sam", "dataset": "cifar10", "model": "wrn16_8"},
              completed(0.9745))
    (section,) = build_sections(find_runs([tmp_path]))
    entry = section.tables[0].entries[("ASAM (rho 2.0, eta 0)", "CIFAR-10")]
    assert (entry.ours.mean, entry.published) == (pytest.approx(2.55), 2.55)


def test_groups_told_apart_only_by_their_choices_keep_separate_lines(tmp_path: Path, base_config):
    for choice in ("sam", "sam_variant"):  # two config options that resolve to the same values
        write_run(tmp_path / choice, base_config, {}, {"optimizer": "sam", "dataset": "digits", "model": choice},
                  completed(0.9 if choice == "sam" else 0.8))
    (section,) = build_sections(find_runs([tmp_path]))
    generic, detail = section.tables
    assert detail.rows == ["sam · digits · sam", "sam · digits · sam_variant"]
    assert generic.rows == ["sam · model=sam", "sam · model=sam_variant"]
    assert [generic.entries[(row, "digits")].ours.mean for row in generic.rows] == [pytest.approx(90), pytest.approx(80)]


def test_evaluating_test_every_epoch_does_not_split_a_group(tmp_path: Path, base_config):
    choices = {"experiment": "gam_cifar", "optimizer": "sgd", "dataset": "cifar10", "model": "resnet18"}
    for seed, on in enumerate((True, False)):
        write_run(tmp_path / str(seed), base_config, {"seed": seed, "trainer.test_every_epoch": on}, choices,
                  completed(0.9))
    (section,) = build_sections(find_runs([tmp_path]))
    assert [len(group.runs) for group in section.groups] == [2]


def test_the_fsam_table_tells_the_lmbda_runs_apart(tmp_path: Path, base_config):
    choices = {"experiment": "fsam_cifar100", "optimizer": "friendly_sam", "dataset": "cifar100",
               "model": "resnet18"}
    for seed, (lmbda, accuracy) in enumerate(((0.6, 0.812), (0.95, 0.813), (0.6, 0.814))):
        settings = {"seed": seed, "optimizer.rho": 0.2, "optimizer.sigma": 1.0, "optimizer.lmbda": lmbda}
        write_run(tmp_path / str(seed), base_config, settings, choices, completed(accuracy))
    (section,) = build_sections(find_runs([tmp_path]))
    paper = section.tables[0]
    low, high = (paper.entries[(f"F-SAM (rho 0.2, sigma 1, lmbda {lmbda})", "CIFAR-100")] for lmbda in (0.6, 0.95))
    assert (low.ours.n, low.ours.mean, low.published) == (2, pytest.approx(81.3), 81.19)
    assert (high.ours.n, high.ours.mean, high.published) == (1, pytest.approx(81.3), 81.32)
    assert paper.entries[("SAM (rho 0.2)", "CIFAR-100")].published == 80.78


def test_runs_that_evaluate_other_weights_show_their_training_weights_too(tmp_path: Path, base_config):
    choices = {"optimizer": "sam", "dataset": "digits", "model": "small_cnn"}
    write_run(tmp_path / "plain", base_config, {}, choices, completed(0.95))
    averaged = {**completed(0.97), "evaluated": "the EMA average"}
    averaged["test"]["last_training_weights"] = {"test/accuracy": 0.94, "test/loss": 0.3}
    write_run(tmp_path / "ema", base_config, {"optimizer.averaging.kind": "ema"}, choices, averaged)
    (section,) = build_sections(find_runs([tmp_path]))
    generic, detail = section.tables
    assert generic.columns == ["digits", "digits, final training weights"]
    assert generic.rows == ["sam · optimizer.averaging.kind=ema", "sam · optimizer.averaging.kind=none"]
    ema, plain = generic.rows
    assert generic.entries[(ema, "digits")].ours.mean == pytest.approx(97)
    assert generic.entries[(ema, "digits, final training weights")].ours.mean == pytest.approx(94)
    assert generic.entries[(plain, "digits")].ours.mean == pytest.approx(95)
    assert generic.entries[(plain, "digits, final training weights")].ours is None
    assert generic.notes and "the EMA average" in generic.notes[0]
    assert "test/accuracy, final training weights (%)" in detail.columns
