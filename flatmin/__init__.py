"""flatmin: a research framework for optimizers that seek flat minima.

One concern per part, each importing only the parts below it (README, "Architecture"): ``runtime``
(device, precision, DDP), ``data``, ``models``, ``optim`` (the methods and ``build_optimizer``),
``step`` (one optimizer step), ``assembly`` (a run's parts from its config), ``sharpness``, ``report``
and ``train`` (the Trainer and the run entry used by ``train.py``).
"""

import flatmin.resolvers  # noqa: F401  (registers the ${pick:...} resolver the configs use)
from flatmin.errors import CheckpointError, ConfigError, DataNotFoundError, FlatminError

__version__ = "0.1.0"

__all__ = ["CheckpointError", "ConfigError", "DataNotFoundError", "FlatminError", "__version__"]
