"""Training: the run entry behind ``train.py`` (``run``, ``main``), the Trainer's loop, mid-epoch
checkpoints and stops, logging and seeding; a run's parts come from ``flatmin.assembly``."""

from flatmin.train.run import main, run
from flatmin.train.trainer import Trainer

__all__ = ["Trainer", "main", "run"]
