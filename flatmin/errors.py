"""The exceptions flatmin raises for bad input.

Each carries one sentence meant for the user; ``flatmin.train.main`` prints it and exits
non-zero instead of showing a traceback.
"""


class FlatminError(Exception):
    """A user-facing error: the message is one clear sentence saying what to change."""


class ConfigError(FlatminError):
    """A configuration value is invalid (wrong type or out of range)."""


class DataNotFoundError(FlatminError):
    """A dataset is not on disk and cannot be downloaded."""


class DataFormatError(FlatminError):
    """A dataset's files are on disk but do not hold what the dataset config describes."""


class ModelNotFoundError(FlatminError):
    """Pretrained weights or a tokenizer are neither on disk nor downloadable."""


class CheckpointError(FlatminError):
    """A checkpoint is missing, unreadable or does not fit the run."""


class DivergedError(FlatminError):
    """The training loss became non-finite (or ran past ``trainer.divergence_threshold``)."""
