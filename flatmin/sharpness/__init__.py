"""Sharpness of a trained model: the Hessian trace (Hutchinson, 1989) and its top eigenvalues
(power iteration with deflation, as in PyHessian, Yao et al., 2020), measured under the NSO
release's protocol; optionally adaptive m-sharpness (Andriushchenko & Flammarion, 2022). The
measures papers plot, each equal to the code they cite: the Hessian's eigenvalue spectral density
(``spectrum.py``, PyHessian), worst-case and average sharpness (``adversarial.py``, Andriushchenko
et al., 2023), loss-landscape directions, surfaces and interpolations (``landscape.py``, Li et al.,
2018); ``untouched.py`` leaves the model as a measurement found it.

``hessian.py`` has the Hessian-vector products and the estimators, ``m_sharpness.py`` the
worst-case loss increase in a ball, ``measure.py`` the protocol
(parameters, fixed training subset, eval mode, fp32), ``__main__.py`` the command line::

    python -m flatmin.sharpness outputs/runs/<stamp> [--checkpoint best] [--top-k 3] [--json out.json]

``trainer.sharpness=true`` measures the final model at the end of training into ``summary.json``.
"""

from flatmin.sharpness.adversarial import average_sharpness, worst_case_sharpness
from flatmin.sharpness.hessian import batch_hessian, hutchinson_trace, subset_hessian, top_eigenvalues
from flatmin.sharpness.landscape import interpolate, loss_surface, parse_grid, random_direction, target_direction
from flatmin.sharpness.measure import SharpnessOptions, measure_sharpness, select_parameters
from flatmin.sharpness.measures import AnalysisOptions, in_brief, measure_run
from flatmin.sharpness.spectrum import density_curve, spectral_density

__all__ = ["AnalysisOptions", "SharpnessOptions", "average_sharpness", "batch_hessian", "density_curve", "hutchinson_trace",
           "in_brief", "interpolate", "loss_surface", "measure_run", "measure_sharpness", "parse_grid", "random_direction",
           "select_parameters", "spectral_density", "subset_hessian", "target_direction", "top_eigenvalues",
           "worst_case_sharpness"]
