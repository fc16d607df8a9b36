"""Selection rules over synthetic sweeps in the real run-directory shapes (``flatmin.report.protocols``):
AlgoPerf's median of study minima, the seeds' medians, Crowded Valley's final-epoch ranking and its
tuned against one-shot summaries; failures and absences count as never reaching, never dropped."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from flatmin.report.protocols import algoperf_scores, crowded_valley, read_trials, seed_medians, workload_of
from flatmin.report.runs import ReportError, find_runs
from flatmin.report.stats import summarise
from tests.report.conftest import completed, write_run
from tests.report.sweeps import AT, NEVER, epochs, write_trial


def test_workload_is_the_tuning_name_else_the_dataset_and_model_class():
    assert workload_of({"dataset.name": "digits", "model._target_": "flatmin.models.SmallCNN"}) == "digits/SmallCNN"
    assert workload_of({"dataset.name": "digits", "model._target_": "x.SmallCNN", "tuning.workload": None}) == \
        "digits/SmallCNN"
    assert workload_of({"dataset.name": "digits", "tuning.workload": "digits-noise20"}) == "digits-noise20"


def test_read_trials_reads_the_tuning_block_and_keeps_failed_trials(tmp_path: Path, base_config: dict):
    write_trial(tmp_path / "0", base_config, method="sam", study=1, trial=2, seed=1, trials=5, studies=3,
                point={"optimizer.lr": 0.0316, "optimizer.rho": 0.0871})
    write_trial(tmp_path / "1", base_config, status="failed", trial=1)
    write_trial(tmp_path / "2", base_config, protocol="crowded_valley", phase="oneshot", trial=None, study=None,
                reseed=0, point={})
    write_run(tmp_path / "plain", base_config, {"seed": 0}, None, completed(0.9))       # no tuning block
    (tmp_path / "refused").mkdir()                                                      # refused before work
    (tmp_path / "refused" / "summary.json").write_text(json.dumps({"status": "failed", "error": "bad config"}))
    trials = read_trials([tmp_path])
    assert [trial.path.name for trial in trials] == ["0", "1", "2"]
    sam = trials[0]
    assert (sam.method, sam.workload, sam.protocol, sam.phase, sam.study, sam.trial, sam.reseed, sam.seed,
            sam.trials, sam.studies, sam.status) == ("sam", "digits/SmallCNN", "algoperf", "tune", 1, 2, None, 1, 5, 3,
                                                     "completed")
    assert sam.point == {"optimizer.lr": 0.0316, "optimizer.rho": 0.0871}
    assert sam.target == {"metric": "val/accuracy", "value": 0.9}
    assert sam.run.path == sam.path and sam.run.config["optimizer.lr"] == 0.0316
    assert trials[1].status == "failed"
    assert (trials[2].phase, trials[2].reseed, trials[2].point) == ("oneshot", 0, {})


def algoperf_sweep(root: Path, base: dict, studies: dict[int, list[list | None]], method: str = "sgd",
                   workload: str | None = None, status: dict[tuple[int, int], str] | None = None) -> None:
    """``studies[j][i]``: trial (j, i)'s accuracies (None: the trial is absent)."""
    trials = max(len(row) for row in studies.values())
    for study, row in studies.items():
        for index, accuracies in enumerate(row):
            if accuracies is not None:
                write_trial(root / f"{method}-{workload}-{study}-{index}", base, accuracies, method=method,
                            study=study, trial=index, seed=study, trials=trials, studies=len(studies),
                            workload=workload, status=(status or {}).get((study, index), "completed"))


def test_algoperf_takes_each_studys_fastest_trial_and_the_median_of_an_odd_number(tmp_path: Path, base_config):
    """s_0 = 2 (trial 1), s_1 = 4 (tie: trial 0), s_2 = ∞ (trial 1 failed though its records reach):
    median 4."""
    algoperf_sweep(tmp_path, base_config, {0: [AT[3], AT[2]], 1: [AT[4], AT[4]], 2: [NEVER, AT[1]]},
                   status={(2, 1): "failed"})
    (scores,) = algoperf_scores(read_trials([tmp_path]), "val/accuracy", 0.9, unit="epochs").values()
    assert scores.studies == {0: 2.0, 1: 4.0, 2: math.inf}
    assert scores.best == {0: tmp_path / "sgd-None-0-1", 1: tmp_path / "sgd-None-1-0", 2: None}
    assert scores.score == 4.0 and scores.missing == ()
    passes = algoperf_scores(read_trials([tmp_path]), "val/accuracy", 0.9, unit="passes")
    assert passes[("sgd", "digits/SmallCNN")].score == 400.0                     # 100 passes an epoch


@pytest.mark.parametrize(("studies", "expected"), [
    ({0: [AT[2]], 1: [AT[4]]}, 3.0),                       # an even number: the middle two averaged
    ({0: [AT[1]], 1: [NEVER]}, math.inf),                  # [1, ∞]: ∞ takes part
    ({0: [NEVER], 1: [NEVER], 2: [AT[5]]}, math.inf),
], ids=["even", "even-inf", "odd-inf"])
def test_algoperf_medians_keep_infinity(tmp_path: Path, base_config, studies, expected):
    algoperf_sweep(tmp_path, base_config, studies)
    (scores,) = algoperf_scores(read_trials([tmp_path]), "val/accuracy", 0.9, unit="epochs").values()
    assert scores.score == expected


def test_an_absent_trial_counts_infinite_and_is_listed(tmp_path: Path, base_config):
    algoperf_sweep(tmp_path, base_config, {0: [NEVER, AT[2]], 1: [AT[3], None]}, workload="w")
    algoperf_sweep(tmp_path, base_config, {0: [None, None], 1: [AT[1], None]}, method="sam", workload="w")
    scores = algoperf_scores(read_trials([tmp_path]), "val/accuracy", {"w": 0.9}, unit="epochs")
    assert scores[("sgd", "w")].missing == ((1, 1),) and scores[("sgd", "w")].studies == {0: 2.0, 1: 3.0}
    sam = scores[("sam", "w")]
    assert sam.missing == ((0, 0), (0, 1), (1, 1)) and sam.studies == {0: math.inf, 1: 1.0}
    assert sam.best == {0: None, 1: tmp_path / "sam-w-1-0"} and sam.score == math.inf


def test_the_fastest_trial_is_the_smallest_time_not_the_first_evaluation(tmp_path: Path, base_config):
    """Trial 0 reaches at epoch 2 after 6 s, trial 1 at epoch 3 after 3 s: in seconds trial 1 is the
    fastest (DOCUMENTATION.md 415/421), where AlgoPerf's code would take trial 0's earlier evaluation."""
    write_trial(tmp_path / "0", base_config, AT[2], trial=0, seconds=3.0)
    write_trial(tmp_path / "1", base_config, AT[3], trial=1, seconds=1.0)
    trials = read_trials([tmp_path])
    seconds = algoperf_scores(trials, "val/accuracy", 0.9, unit="seconds")[("sgd", "digits/SmallCNN")]
    assert seconds.best == {0: tmp_path / "1"} and seconds.score == 3.0
    epochs_ = algoperf_scores(trials, "val/accuracy", 0.9, unit="epochs")[("sgd", "digits/SmallCNN")]
    assert epochs_.best == {0: tmp_path / "0"} and epochs_.score == 2.0


def test_two_runs_for_one_study_and_trial_are_refused(tmp_path: Path, base_config):
    write_trial(tmp_path / "a", base_config, study=0, trial=1)
    write_trial(tmp_path / "b", base_config, study=0, trial=1)
    with pytest.raises(ReportError, match=r"Two runs for one \(method, workload, study, trial\) = "
                                          r"\(sgd, digits/SmallCNN, 0, 1\): .*a and .*b; give the report one"):
        algoperf_scores(read_trials([tmp_path]), "val/accuracy", 0.9)


def test_seeds_take_the_median_of_each_configuration_counting_failures_infinite(tmp_path: Path, base_config):
    """SGD reaches at epochs 1, 2, never; SAM at rho 0.05 at 1 and diverged; at rho 0.1 at 2 and 4."""
    def run(name: str, seed: int, accuracies: list, method: str = "sgd", status: str = "completed", **settings):
        """A run whose summary records the Hydra choices when it completed, as the trainer's does."""
        choices = {"optimizer": method, "model": "small_cnn"} if status == "completed" else None
        write_run(tmp_path / name, base_config, {"seed": seed, "optimizer.name": method, **settings}, choices,
                  {**completed(0.9), "status": status}, epochs(accuracies))

    for seed, accuracies in enumerate((AT[1], AT[2], NEVER)):
        run(f"sgd{seed}", seed, accuracies)
    run("sam0", 0, AT[1], "sam", **{"optimizer.rho": 0.05})
    run("sam1", 1, AT[1], "sam", status="diverged", **{"optimizer.rho": 0.05})
    for seed, accuracies in enumerate((AT[2], AT[4])):
        run(f"samwide{seed}", seed, accuracies, "sam", **{"optimizer.rho": 0.1})
    medians = seed_medians(find_runs([tmp_path]), "val/accuracy", 0.9, unit="epochs")
    workload = "digits/SmallCNN"
    assert {key: (times.median, times.reached, len(times.runs)) for key, times in medians.items()} == {
        ("sgd", workload): (2.0, 2, 3), ("sam · optimizer.rho=0.05", workload): (math.inf, 1, 2),
        ("sam · optimizer.rho=0.1", workload): (3.0, 2, 2)}
    assert medians[("sgd", workload)].times == (1.0, 2.0, math.inf)


def crowded_sweep(root: Path, base: dict, tune: list[tuple[list, str]], reseeds: list[tuple[float, str]],
                  oneshot: list[float]) -> None:
    """Tuning trials (accuracies, status), reseeds k = 1… (test accuracy, status), one-shot runs k = 0…."""
    for index, (accuracies, status) in enumerate(tune):
        write_trial(root / f"tune{index}", base, accuracies, protocol="crowded_valley", trial=index, study=None,
                    seed=42, trials=len(tune), status=status, test=0.5, point={"optimizer.lr": 0.01 * (index + 1)})
    for k, (test, status) in enumerate(reseeds, 1):
        write_trial(root / f"reseed{k}", base, protocol="crowded_valley", phase="reseed", trial=None, study=None,
                    reseed=k, seed=42 + k, test=test, status=status)
    for k, test in enumerate(oneshot):
        write_trial(root / f"oneshot{k}", base, protocol="crowded_valley", phase="oneshot", trial=None, study=None,
                    reseed=k, seed=42 + k, test=test, point={})


def test_crowded_valley_ranks_the_final_epoch_with_ties_in_order_and_failures_last(tmp_path: Path, base_config):
    """Final accuracies 0.8, 0.9, 0.95 (failed), 0.9, none: ranking 1, 3 (tie: trial order), 0, then
    the failed 2 and the valueless 4 in trial order."""
    tune = [([0.5, 0.8], "completed"), ([0.95, 0.9], "completed"), ([0.5, 0.95], "failed"), ([0.5, 0.9], "completed"),
            ([0.5, None], "completed")]
    crowded_sweep(tmp_path, base_config, tune, [(0.90, "completed"), (0.92, "completed"), (0.99, "diverged")],
                  [0.80, 0.81, 0.82])
    trials = read_trials([tmp_path])
    selection = crowded_valley(trials)[("sgd", "digits/SmallCNN")]
    assert [trial.trial for trial in selection.ranking] == [1, 3, 0, 2, 4]
    assert selection.best.trial == 1 and selection.best.point == {"optimizer.lr": 0.02}
    lower = crowded_valley(trials, metric="val/accuracy", mode="min")[("sgd", "digits/SmallCNN")]
    assert [trial.trial for trial in lower.ranking] == [0, 1, 3, 2, 4]
    assert [trial.reseed for trial in selection.reseeds] == [1, 2, 3]
    assert [trial.reseed for trial in selection.oneshot] == [0, 1, 2]
    assert [trial.path.name for trial in selection.failed] == ["reseed3"]
    assert selection.tuned == summarise([0.90, 0.92])         # not the diverged reseed, nor the tuning trial's 0.5
    assert selection.default == summarise([0.80, 0.81, 0.82])


def test_crowded_valley_without_a_completed_trial_has_no_best(tmp_path: Path, base_config):
    crowded_sweep(tmp_path, base_config, [([0.5, 0.9], "failed"), ([0.5, 0.8], "interrupted")], [], [])
    selection = crowded_valley(read_trials([tmp_path]))[("sgd", "digits/SmallCNN")]
    assert selection.best is None and [trial.trial for trial in selection.ranking] == [0, 1]
    assert selection.tuned is None and selection.default is None and selection.failed == ()


def test_crowded_valley_refuses_two_runs_for_one_reseed(tmp_path: Path, base_config):
    crowded_sweep(tmp_path, base_config, [], [(0.9, "completed")], [])
    write_trial(tmp_path / "again", base_config, protocol="crowded_valley", phase="reseed", reseed=1, trial=None)
    with pytest.raises(ReportError, match=r"\(method, workload, reseed phase, reseed\) = \(sgd, digits/SmallCNN, 1\)"):
        crowded_valley(read_trials([tmp_path]))


def test_a_sweeps_job_indices_and_points_are_not_settings(tmp_path: Path, base_config):
    """Reseeds of one point differ in seed and tuning.reseed, the studies of a search in tuning.study: like
    the seed, these do not make another configuration (today's tables group such runs as seeds of one)."""
    for k in (1, 2, 3):
        write_trial(tmp_path / f"reseed{k}", base_config, AT[k], protocol="crowded_valley", phase="reseed", trial=None,
                    study=None, reseed=k, seed=42 + k, point={"optimizer.lr": 0.2})
    for study in (0, 1):
        write_trial(tmp_path / f"study{study}", base_config, AT[2], study=study, trial=study, seed=study, studies=2,
                    point={"optimizer.lr": 0.3})
    medians = seed_medians(find_runs([tmp_path]), "val/accuracy", 0.9, unit="epochs")
    assert sorted(len(times.runs) for times in medians.values()) == [2, 3]
