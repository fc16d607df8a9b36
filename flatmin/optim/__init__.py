"""Flat-minima optimizers on one contract: ``opt.step(closure)`` (see ``docs/optimizers.md``).

Every module of this package is imported here, so that a method file registers its class (and
becomes importable as ``flatmin.optim.<ClassName>``) without being listed anywhere else.
"""

import importlib
import pkgutil

from flatmin.optim.multipass import METHODS, NORM_EPS, MultiPassOptimizer, global_norm

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
globals().update({cls.__name__: cls for cls in METHODS.values()})

from flatmin.optim.averaging import WeightAveraging  # noqa: E402
from flatmin.optim.build import build_hyper_schedule, build_optimizer, param_groups  # noqa: E402
from flatmin.optim.hyper_schedule import HyperparameterSchedule  # noqa: E402
from flatmin.optim.lookahead import Lookahead  # noqa: E402
from flatmin.optim.method_table import method_table  # noqa: E402
from flatmin.optim.registry import method_label, option_config, option_names  # noqa: E402
from flatmin.optim.settings import BASE_OPTIMIZERS  # noqa: E402

__all__ = ["BASE_OPTIMIZERS", "METHODS", "NORM_EPS", "HyperparameterSchedule", "Lookahead", "MultiPassOptimizer",
           "WeightAveraging", "build_hyper_schedule", "build_optimizer", "global_norm", "method_label", "method_table",
           "option_config", "option_names", "param_groups",
           *sorted(cls.__name__ for cls in METHODS.values())]
