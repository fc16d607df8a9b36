"""Hyperparameter tuning: a config's search space (``space.py``) and AlgoPerf's quasirandom draws of
trial points from it (``halton.py``)."""

from flatmin.tuning.halton import draw_trials
from flatmin.tuning.space import search_space

__all__ = ["draw_trials", "search_space"]
