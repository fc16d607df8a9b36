"""Runs → tables and plots: ``python -m flatmin.report <sweep or run dirs…>``.

``runs.py`` finds and reads run directories (completed, failed, unfinished); ``tables.py`` groups
completed runs by everything but the seed and lays them out, in the papers' layouts
(``published.py``, with the published numbers) or a generic one; ``stats.py`` has the mean, std
and Student-t interval; ``render.py`` writes Markdown, LaTeX or CSV; ``plots.py`` the figures.
Comparing methods: ``targets.py`` reads a run's time to a target, ``protocols.py`` selects the runs
behind a method's time (AlgoPerf's studies, seeds, Crowded Valley), ``profiles.py`` aggregates the
times, ``comparison.py`` puts them together and ``comparison_tables.py`` lays them out.
"""

from flatmin.report.runs import Run, find_runs
from flatmin.report.tables import Section, build_sections

__all__ = ["Run", "Section", "build_sections", "find_runs"]
