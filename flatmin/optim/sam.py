"""SAM (Foret et al., ICLR 2021) and ASAM (Kwon et al., ICML 2021).

SAM ascends to the worst point of a rho-ball around θ and takes the gradient there:
``e = rho · g/(‖g‖+ξ)``, ``G = ∇L_B(θ+e)``. ASAM (``adaptive=True``) measures the ball in the
parameter-scaled geometry ``T = |θ| + eta``: ``e = rho · T²⊙g / ‖T⊙g‖``; tensors of a param group
with ``adaptive=False`` (biases, set by ``build_optimizer``) use ``T = 1``. USAM (``normalize=False``)
drops the norm: ``e = rho·S²⊙g``.
Cost: 2 passes, 1 extra parameter-sized buffer (the saved θ); ASAM's T allocates nothing: it is
built in the parameters' own storage, θ being restored from its saved copy after the pass
(``MultiPassOptimizer.ascend_in_ball``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from flatmin.checks import BOOLEAN, NON_NEGATIVE
from flatmin.optim.hyper import ADAPTIVE_BALL, AROUND_TENFOLD, Card, Hyper
from flatmin.optim.multipass import Closure, MultiPassOptimizer


class SAM(MultiPassOptimizer, key="sam"):
    """Sharpness-Aware Minimization; ``adaptive=True`` gives ASAM, ``normalize=False`` USAM.

    Defaults: rho 0.05 (SAM's) and eta 0.01 (the official ASAM code's); ASAM's rho 0.5 is
    ``flatmin/conf/optimizer/asam.yaml``'s (``SAM(..., adaptive=True)`` keeps 0.05 unless given). The widely
    copied single-file ASAM (T = |θ|, best rho 2.0) is ``eta=0`` with every tensor adaptive.
    USAM (Andriushchenko & Flammarion, ICML 2022, §2; Compagnoni et al., AISTATS 2023) drops the
    norm: ``e = rho·S²⊙g``; the release (tml-epfl/understanding-sam ``deep_nets/sam.py``,
    ``sam_no_grad_norm=True``) scales by ``rho/(1+1e-12)``, a relative difference of 1e-12.
    Only groups with ``perturb`` true are moved, and ‖S⊙g‖ is over them (SAM-ON, Mueller et al.,
    NeurIPS 2023: ``optimizer.perturb=norm``). Gradient accumulation: each micro-batch is perturbed
    along its own gradient (m-sharpness).
    """

    hyperparameters = {
        "rho": Hyper(0.05, NON_NEGATIVE, "radius of the ascent", schedulable=True, search=AROUND_TENFOLD),
        **ADAPTIVE_BALL,
        "normalize": Hyper(True, BOOLEAN, "false: USAM, e = rho·S²⊙g without the norm", structural=True),
    }
    card = Card("SAM; ASAM (`adaptive`); USAM (`normalize: false`); SAM-ON (`perturb: norm`)", "2", "1 (θ)",
                "Foret et al., ICLR 2021; Kwon et al., ICML 2021; Andriushchenko & Flammarion, ICML 2022; "
                "Mueller et al., NeurIPS 2023")
    passes_per_step = 2

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        """Two passes on the same mini-batch; returns the loss of the first (at θ)."""
        loss = self.take_pass(closure)                  # g = ∇L_B(θ)
        moved = self.active().perturbed
        theta = self.save("theta", moved.params, moved.params)
        self.ascend_in_ball(moved, theta, "rho", self.normalize)     # θ ← θ + e
        self.take_pass(closure)                         # G = ∇L_B(θ + e)
        self.restore(moved.params, theta)
        self.base_step()
        return loss
