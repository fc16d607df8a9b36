"""flatmin: a research framework for optimizers that seek flat minima.

The package is organised one concern per sub-package: ``data`` (datasets and loaders),
``models`` (networks), ``optim`` (the flat-minima methods and ``build_optimizer``) and
``train`` (the Trainer, checkpoints, precision and the run entry used by ``train.py``).
"""

import flatmin.resolvers  # noqa: F401  (registers the ${pick:...} resolver the configs use)
from flatmin.errors import CheckpointError, ConfigError, DataNotFoundError, FlatminError

__version__ = "0.1.0"

__all__ = ["CheckpointError", "ConfigError", "DataNotFoundError", "FlatminError", "__version__"]
