"""The papers' tables as data: their layout (rows and columns, each with the run settings it
selects), the metric they report and the published numbers (``docs/recipes.md``).

A row or column selects runs by ``match``: each key is a facet of a run (``method``, ``dataset``,
``model``, ``experiment``: the Hydra choices) or a dotted config key (``optimizer.rho``); a value
is the one accepted, or a tuple of accepted values. A cell holds the runs its row and column both
select. A number that nobody here has is left out of ``published`` (the cell stays empty and the
table's notes say why): never fill one in. A table whose metric is selected on the test split
(GAM's best epoch on test) is shown only when asked (``--best-on-test``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from flatmin.data.metrics import RANGES
from flatmin.rundir import (BEST_TEST, FINAL, LAST_TRAINING_WEIGHTS, SHARPNESS, TEST, TEST_OF_BEST_VAL,
                            TEST_OF_LAST)

# The SAM paper's augmentations as dataset settings (flatmin/conf/dataset_common/cifar.yaml): "basic" is
# crop + flip alone; cutout is 16 px on CIFAR-10 and commonly 8 px on CIFAR-100 (DeVries & Taylor).
AUGMENTATIONS = {"basic": {"dataset.augment.policy": None, "dataset.augment.cutout": 0},
                 "cutout": {"dataset.augment.policy": None, "dataset.augment.cutout": (8, 16)},
                 "autoaugment": {"dataset.augment.policy": "autoaugment"}}
LABEL_NOISE = "dataset.label_noise.rate"
# How a metric of summary.json's best epoch on the test split (trainer.test_every_epoch) is named.
BEST_EPOCH_ON_TEST = "best epoch on test (selected on test, as GAM's released script)"


@dataclass(frozen=True)
class Metric:
    """A number of ``summary.json`` (``path`` into it), shown as ``scale · value + offset`` with
    ``digits`` decimals (None: four significant digits)."""

    label: str
    path: tuple[str, ...]
    scale: float = 1.0
    offset: float = 0.0
    digits: int | None = 2

    def read(self, summary: Mapping[str, Any]) -> float | None:
        value: Any = summary
        for key in self.path:
            if not isinstance(value, Mapping) or key not in value:
                return None
            value = value[key]
        return None if value is None else self.scale * float(value) + self.offset

    def format(self, value: float) -> str:
        return f"{value:.4g}" if self.digits is None else f"{value:.{self.digits}f}"

    @property
    def bounds(self) -> tuple[float, float]:
        """The range the shown number can take (a named metric's range, scaled; else unbounded)."""
        low, high = RANGES.get(self.path[-1].rsplit("/", 1)[-1], (-math.inf, math.inf))
        return tuple(sorted((self.scale * low + self.offset, self.scale * high + self.offset)))  # type: ignore

    @property
    def selected_on_test(self) -> bool:
        """Whether the number is of the epoch chosen on the test split (shown only when asked)."""
        return self.path[0] == BEST_TEST


@dataclass(frozen=True)
class Heading:
    """A row or column of a table: its label, the run settings it selects, and (for columns) the
    metric it shows when that differs from the table's."""

    label: str
    match: Mapping[str, Any]
    metric: Metric | None = None


@dataclass(frozen=True)
class PaperTable:
    experiment: str
    title: str
    metric: Metric
    rows: tuple[Heading, ...]
    columns: tuple[Heading, ...]
    published: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (row, column) → number
    notes: tuple[str, ...] = ()


#: The models summary.json tests, by key under ``test``. ``last_training_weights``: the final training
#: weights of a run whose optimizer evaluates other weights (``evaluated``: Lookahead's slow weights, a
#: weight average), which ``last`` and ``best_val`` then are.
MODEL_NAMES = {TEST_OF_LAST: "final model", TEST_OF_BEST_VAL: "best-validation model",
               LAST_TRAINING_WEIGHTS: "final training weights"}


def error_percent(model: str) -> Metric:
    """Test error (%) = 100·(1 − accuracy) of the ``last`` or ``best_val`` model."""
    return Metric(f"test error (%), {MODEL_NAMES[model]}", (TEST, model, "test/accuracy"), -100.0, 100.0)


def accuracy_percent(model: str) -> Metric:
    """Test accuracy (%) of the ``last`` or ``best_val`` model."""
    return Metric(f"test accuracy (%), {MODEL_NAMES[model]}", (TEST, model, "test/accuracy"), 100.0)


#: Test accuracy (%) of the best epoch on test (``trainer.test_every_epoch``): selected on test.
BEST_ON_TEST_ACCURACY = Metric(f"test accuracy (%), {BEST_EPOCH_ON_TEST}", (BEST_TEST, "test/accuracy"), 100.0)

#: Validation (for GLUE: dev) accuracy of the final epoch, for datasets without a labelled test split.
FINAL_DEV_ACCURACY = Metric("validation accuracy (%), final epoch", (FINAL, "val/accuracy"), 100.0)


# -- SAM: Foret et al., ICLR 2021, Table 1 -------------------------------------------------------
_SAM_COLUMNS = tuple(Heading(f"{short} {name}", {"dataset": dataset, "method": method})
                     for short, dataset in (("C10", "cifar10"), ("C100", "cifar100"))
                     for name, method in (("SAM", "sam"), ("SGD", "sgd")))
_SAM_ROWS = {  # label: (model choice, augmentation), published C10 SAM, C10 SGD, C100 SAM, C100 SGD
    "WRN-28-10 (200 epochs) · basic": (("wrn28_10", "basic"), (2.7, 3.5, 16.5, 18.8)),
    "WRN-28-10 (200 epochs) · cutout": (("wrn28_10", "cutout"), (2.3, 2.6, 14.9, 16.9)),
    "WRN-28-10 (200 epochs) · AutoAugment": (("wrn28_10", "autoaugment"), (2.1, 2.3, 13.6, 15.8)),
    "PyramidNet · basic": (("pyramidnet272", "basic"), (2.7, 4.0, 14.6, 19.7)),
    "PyramidNet+ShakeDrop · basic": (("pyramidnet272_shakedrop", "basic"), (2.1, 2.5, 13.3, 14.5)),
}
SAM_CIFAR_WRN28 = PaperTable(
    experiment="sam_cifar_wrn28",
    title="SAM (Foret et al., ICLR 2021), CIFAR",
    metric=error_percent(TEST_OF_LAST),
    rows=tuple(Heading(label, {"model": model, **AUGMENTATIONS[augment]})
               for label, ((model, augment), _) in _SAM_ROWS.items()),
    columns=_SAM_COLUMNS,
    published={(row, column.label): number for row, (_, numbers) in _SAM_ROWS.items()
               for column, number in zip(_SAM_COLUMNS, numbers)},
    notes=("Published: mean of 5 runs; rho chosen on a 10% validation split; the SGD baseline was allowed "
           "twice the epochs and the better result kept, so compare at equal epochs and at equal gradient "
           "evaluations.",
           "PyramidNet rows: the paper's PyramidNet-272 (alpha 200), as the model choices pyramidnet272 and "
           "pyramidnet272_shakedrop."),
)

# -- the widely used single-GPU WRN-16-8 reference ------------------------------------------------
SAM_CIFAR_WRN16 = PaperTable(
    experiment="sam_cifar_wrn16",
    title="WRN-16-8 on CIFAR-10, davda54/sam's single-GPU reference (200 epochs, step LR, label smoothing 0.1, "
          "cutout, batch 128, lr 0.1)",
    metric=error_percent(TEST_OF_LAST),
    rows=(Heading("SGD", {"method": "sgd"}),
          Heading("SAM (rho 0.05)", {"method": "sam", "optimizer.rho": 0.05}),
          Heading("ASAM (rho 2.0, eta 0)", {"method": "asam", "optimizer.rho": 2.0, "optimizer.eta": 0.0}),
          Heading("ASAM, official (rho 0.5, eta 0.01)",
                  {"method": "asam", "optimizer.rho": 0.5, "optimizer.eta": 0.01})),
    columns=(Heading("CIFAR-10", {"dataset": "cifar10", "model": "wrn16_8"}),),
    published={("SGD", "CIFAR-10"): 3.20, ("SAM (rho 0.05)", "CIFAR-10"): 2.86,
               ("ASAM (rho 2.0, eta 0)", "CIFAR-10"): 2.55, ("ASAM, official (rho 0.5, eta 0.01)", "CIFAR-10"): 2.37},
    notes=("The official ASAM number is Kwon et al.'s (ICML 2021) own setting on the same protocol, which no "
           "release trains (docs/recipes.md); the sweep runs the reference's ASAM, and the official one is "
           "optimizer=asam optimizer.rho=0.5 optimizer.eta=0.01 optimizer.adaptive_tensors=weights.",),
)

# -- GAM: Zhang et al., CVPR 2023 ----------------------------------------------------------------
GAM_CIFAR = PaperTable(
    experiment="gam_cifar",
    title="GAM (Zhang et al., CVPR 2023), CIFAR",
    metric=accuracy_percent(TEST_OF_LAST),
    rows=tuple(Heading(f"{model_name} · {method_name}", {"model": model, "method": method})
               for model_name, model in (("ResNet-18", "resnet18"), ("PyramidNet-110", "pyramidnet110"))
               for method_name, method in (("SGD", "sgd"), ("SAM", "sam"), ("GAM", "gam"))),
    columns=(Heading("CIFAR-10", {"dataset": "cifar10"}), Heading("CIFAR-100", {"dataset": "cifar100"})),
    notes=("Published numbers: not available here.",
           "The released script reports the best test accuracy over epochs; this table is the final model's "
           "(--best-on-test adds that number, selected on test, as a table of its own)."),
)
GAM_CIFAR_BEST_ON_TEST = replace(
    GAM_CIFAR, metric=BEST_ON_TEST_ACCURACY,
    notes=("Published numbers: not available here.",
           "Each run's best test accuracy over epochs (trainer.test_every_epoch), as the released script reports "
           "it: the epoch is selected on the test split, so the number is optimistic; the final model's table is "
           "the unbiased one."),
)

# -- NSO: Li, Ju & Zhang, arXiv 2306.08553 --------------------------------------------------------
_NSO_DATASETS = (("FGVC-Aircraft", "aircraft"), ("CUB-200-2011", "cub200"), ("Caltech-256", "caltech256"),
                 ("Stanford Cars", "cars"), ("Stanford Dogs", "dogs"), ("Flowers-102", "flowers102"),
                 ("MIT Indoor-67", "indoor67"), ("CIFAR-10", "cifar10"), ("CIFAR-100", "cifar100"))
_PLAIN = ("sgd", "adam")  # the paper's unperturbed baseline ("SGD"); the release trains it with Adam
NSO_FINETUNE = PaperTable(
    experiment="nso_finetune",
    title="NSO (Li, Ju & Zhang, 2023), fine-tuning ResNet-34 (ImageNet weights)",
    metric=accuracy_percent(TEST_OF_BEST_VAL),
    rows=tuple(Heading(name, {"dataset": dataset}) for name, dataset in _NSO_DATASETS),
    columns=(Heading("SGD/Adam", {"method": _PLAIN, "trainer.label_smoothing": 0.0}),
             Heading("Label smoothing 0.2", {"method": _PLAIN, "trainer.label_smoothing": 0.2}),
             Heading("SAM", {"method": "sam"}), Heading("ASAM", {"method": "asam"}), Heading("NSO", {"method": "nso"})),
    notes=("Per-dataset accuracies: not available here (the paper claims up to +1.8% over the "
           "sharpness-reducing baselines on six image sets). Published: 3 seeds, mean ± std, model selected by "
           "best validation accuracy.",),
)
_HESSIAN_DATASETS = (("MIT Indoor-67", "indoor67"), ("Caltech-256", "caltech256"), ("FGVC-Aircraft", "aircraft"),
                     ("CIFAR-10", "cifar10"))
_HESSIAN_COLUMNS = (Heading("NSO", {"method": "nso"}), Heading("SAM", {"method": "sam"}),
                    Heading("SGD", {"method": _PLAIN}))
_HESSIAN_NOTES = ("Published values read off a bar chart (about ±5%), ResNet-34, 3 seeds. The release measures "
                  "conv weights and the head (trainer.sharpness_params=conv_and_head) of its best-validation "
                  "checkpoint on 1,000 training examples, averaged over mini-batches; trainer.sharpness measures "
                  "the final model.",)


def _hessian_table(quantity: str, label: str, scale: float, values: tuple[tuple[float, ...], ...]) -> PaperTable:
    return PaperTable(
        experiment="nso_finetune",
        title=f"NSO (Li, Ju & Zhang, 2023), Hessian {quantity}",
        metric=Metric(label, (SHARPNESS, quantity), 1 / scale),
        rows=tuple(Heading(name, {"dataset": dataset}) for name, dataset in _HESSIAN_DATASETS),
        columns=_HESSIAN_COLUMNS,
        published={(row, column.label): number for (row, _), numbers in zip(_HESSIAN_DATASETS, values)
                   for column, number in zip(_HESSIAN_COLUMNS, numbers)},
        notes=_HESSIAN_NOTES,
    )


NSO_LAMBDA_MAX = _hessian_table("lambda_max", "λ1 (×10³)", 1e3,
                                ((0.65, 0.97, 1.15), (0.60, 0.98, 1.13), (0.55, 0.95, 1.22), (0.65, 1.42, 1.50)))
NSO_TRACE = _hessian_table("trace", "trace (×10⁴)", 1e4,
                           ((0.28, 0.33, 0.39), (0.30, 0.37, 0.40), (0.39, 0.50, 0.62), (0.22, 0.29, 0.47)))

# -- GLUE: bert-base-uncased reference, dev set ---------------------------------------------------
# GLUE's test labels are hidden: the dev set is evaluated as val (MNLI's mismatched dev set as
# val_mismatched), and a fixed-epoch fine-tuning reports the final epoch's numbers.
_GLUE_COLUMNS = (  # label, dataset choice, metric key, reference (bert-base-uncased, median of 5 seeds)
    ("CoLA MCC", "glue/cola", "val/mcc", 49.23), ("SST-2 acc", "glue/sst2", "val/accuracy", 91.97),
    ("MRPC F1", "glue/mrpc", "val/f1", 89.47), ("MRPC acc", "glue/mrpc", "val/accuracy", 85.29),
    ("STS-B Pearson", "glue/stsb", "val/pearson", 83.95), ("STS-B Spearman", "glue/stsb", "val/spearman", 83.70),
    ("QQP acc", "glue/qqp", "val/accuracy", 88.40), ("QQP F1", "glue/qqp", "val/f1", 84.31),
    ("MNLI-m acc", "glue/mnli", "val/accuracy", 80.61),
    ("MNLI-mm acc", "glue/mnli", "val_mismatched/accuracy", 81.08),
    ("QNLI acc", "glue/qnli", "val/accuracy", 87.46), ("RTE acc", "glue/rte", "val/accuracy", 61.73),
    ("WNLI acc", "glue/wnli", "val/accuracy", 45.07),
)
_GLUE_METRIC = Metric("dev set ×100, final epoch", (FINAL, "val/accuracy"), 100.0)  # each column has its own
_GLUE_BASELINE = "AdamW (bert-base reference)"
_GLUE_NOTE = ("Reference: bert-base-uncased dev set, median of 5 seeds, standard fine-tuning (max length 128, "
              "batch 32, 3 epochs, lr from {5e-5, 4e-5, 3e-5, 2e-5}), shown beside the Adam/AdamW row; ours are "
              "means over seeds under this experiment's protocol.")


def _glue_table(experiment: str, title: str, tasks: tuple[str, ...], methods: tuple[Heading, ...]) -> PaperTable:
    columns = tuple(Heading(label, {"dataset": dataset}, Metric(f"{label} (×100)", (FINAL, key), 100.0))
                    for label, dataset, key, _ in _GLUE_COLUMNS if dataset in tasks)
    reference = {label: number for label, dataset, _, number in _GLUE_COLUMNS if dataset in tasks}
    return PaperTable(
        experiment=experiment, title=title, metric=_GLUE_METRIC,
        rows=(Heading(_GLUE_BASELINE, {"method": ("adamw", "adam")}), *methods),
        columns=columns,
        published={(_GLUE_BASELINE, label): number for label, number in reference.items()},
        notes=(_GLUE_NOTE,),
    )


NSO_GLUE_MRPC = _glue_table("nso_glue_mrpc", "NSO on GLUE MRPC (bert-base-uncased)",
                            ("glue/mrpc",), (Heading("SAM", {"method": "sam"}), Heading("NSO", {"method": "nso"})))
TRACER_GLUE = _glue_table("tracer_glue", "G-TRACER on GLUE (bert-base-uncased)",
                          tuple(dict.fromkeys(dataset for _, dataset, _, _ in _GLUE_COLUMNS)),
                          (Heading("SAM", {"method": "sam"}), Heading("G-TRACER", {"method": "adam_tracer"})))

# -- G-TRACER: Williams & Roberts, arXiv 2306.13914 -------------------------------------------------
TRACER_LABEL_NOISE_CIFAR = PaperTable(
    experiment="tracer_label_noise_cifar",
    title="G-TRACER (Williams & Roberts, 2023), CIFAR with symmetric label noise",
    metric=accuracy_percent(TEST_OF_LAST),
    rows=(Heading("SGD", {"method": "sgd"}), Heading("SAM", {"method": "sam"}),
          Heading("G-TRACER", {"method": "sgd_tracer"})),
    columns=tuple(Heading(f"{short} {round(100 * noise)}% noise", {"dataset": dataset, LABEL_NOISE: noise})
                  for short, dataset in (("C10", "cifar10"), ("C100", "cifar100")) for noise in (0.0, 0.2, 0.4, 0.6)),
    notes=("Protocol and numbers: not available here; this is the nearest standard protocol.",),
)

# -- F-SAM: Li et al., CVPR 2024 -------------------------------------------------------------------
_FSAM_ROWS = (  # label, run settings, published final test accuracy (%)
    ("SGD", {"method": "sgd"}, None),
    ("SAM (rho 0.2)", {"method": "sam", "optimizer.rho": 0.2}, 80.78),
    ("F-SAM (rho 0.2, sigma 1, lmbda 0.6)",
     {"method": "friendly_sam", "optimizer.rho": 0.2, "optimizer.sigma": 1.0, "optimizer.lmbda": 0.6}, 81.19),
    ("F-SAM (rho 0.2, sigma 1, lmbda 0.95)",
     {"method": "friendly_sam", "optimizer.rho": 0.2, "optimizer.sigma": 1.0, "optimizer.lmbda": 0.95}, 81.32),
)
FSAM_CIFAR100 = PaperTable(
    experiment="fsam_cifar100",
    title="F-SAM (Li et al., CVPR 2024), CIFAR-100 ResNet-18, the release's logs",
    metric=accuracy_percent(TEST_OF_LAST),
    rows=tuple(Heading(label, match) for label, match, _ in _FSAM_ROWS),
    columns=(Heading("CIFAR-100", {"dataset": "cifar100", "model": "resnet18"}),),
    published={(label, "CIFAR-100"): number for label, _, number in _FSAM_ROWS if number is not None},
    notes=("Published: one run each (seed 1), the final epoch's test accuracy, read from the release's logs "
           "(nblt/F-SAM@2e2f989 results/{FriendlySAM,SAM}/CIFAR100/resnet18/*/log; their best epochs on test: "
           "81.38, 81.43, 80.88). No SGD run is in the release.",
           "The release keeps the last partial batch of each epoch (391 steps); this experiment drops it "
           "(390), otherwise it follows the release (docs/recipes.md, fsam_cifar100)."),
)

PAPER_TABLES: tuple[PaperTable, ...] = (SAM_CIFAR_WRN28, SAM_CIFAR_WRN16, GAM_CIFAR, GAM_CIFAR_BEST_ON_TEST,
                                        NSO_FINETUNE, NSO_LAMBDA_MAX, NSO_TRACE, NSO_GLUE_MRPC,
                                        TRACER_LABEL_NOISE_CIFAR, TRACER_GLUE, FSAM_CIFAR100)
