"""Training: the Trainer, one optimizer step, precision, checkpoints, logging and the run entry."""

from flatmin.train.run import main, run
from flatmin.train.trainer import Trainer

__all__ = ["Trainer", "main", "run"]
