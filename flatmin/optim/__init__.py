"""Flat-minima optimizers on one contract: ``opt.step(closure)`` (see ``optimizers.md``)."""

from flatmin.optim.build import BASE_OPTIMIZERS, METHODS, build_hyper_schedule, build_optimizer, param_groups
from flatmin.optim.gam import GAM
from flatmin.optim.lookahead import Lookahead
from flatmin.optim.multipass import MultiPassOptimizer, global_norm
from flatmin.optim.nso import NSO
from flatmin.optim.sam import SAM
from flatmin.optim.schedules import HyperparameterSchedule
from flatmin.optim.tracer import TRACER

__all__ = ["BASE_OPTIMIZERS", "GAM", "METHODS", "NSO", "SAM", "TRACER", "HyperparameterSchedule", "Lookahead",
           "MultiPassOptimizer", "build_hyper_schedule", "build_optimizer", "global_norm", "param_groups"]
