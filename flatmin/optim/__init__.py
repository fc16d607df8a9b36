"""Flat-minima optimizers on one contract: ``opt.step(closure)`` (see ``optimizers.md``)."""

from flatmin.optim.build import BASE_OPTIMIZERS, METHODS, build_optimizer, param_groups
from flatmin.optim.multipass import MultiPassOptimizer, global_norm
from flatmin.optim.sam import SAM

__all__ = ["BASE_OPTIMIZERS", "METHODS", "SAM", "MultiPassOptimizer", "build_optimizer", "global_norm",
           "param_groups"]
