"""Hyperparameter tuning: a config's search space (``space.py``), AlgoPerf's quasirandom draws of
trial points from it (``halton.py``) and a sweep job's point and seed (``trial.py``)."""

from flatmin.tuning.halton import draw_trials
from flatmin.tuning.space import search_space
from flatmin.tuning.trial import apply_trial

__all__ = ["apply_trial", "draw_trials", "search_space"]
