"""Sharpness of a trained model: the Hessian trace (Hutchinson, 1989) and its top eigenvalues
(power iteration with deflation, as in PyHessian, Yao et al., 2020), measured under the NSO
release's protocol; optionally adaptive m-sharpness (Andriushchenko & Flammarion, 2022).

``hessian.py`` has the Hessian-vector products and the estimators, ``m_sharpness.py`` the
worst-case loss increase in a ball, ``measure.py`` the protocol
(parameters, fixed training subset, eval mode, fp32), ``__main__.py`` the command line::

    python -m flatmin.sharpness outputs/runs/<stamp> [--checkpoint best] [--top-k 3] [--json out.json]

``trainer.sharpness=true`` measures the final model at the end of training into ``summary.json``.
"""

from flatmin.sharpness.hessian import batch_hessian, hutchinson_trace, subset_hessian, top_eigenvalues
from flatmin.sharpness.measure import SharpnessOptions, measure_run, measure_sharpness, select_parameters

__all__ = ["SharpnessOptions", "batch_hessian", "hutchinson_trace", "measure_run", "measure_sharpness",
           "select_parameters", "subset_hessian", "top_eigenvalues"]
