"""GNP: gradient-norm penalty (Zhao, Zhang & Hu, ICML 2022, arXiv 2202.03599), and the
finite-difference gradient regularisation of Karakida et al. (ICML 2023, arXiv 2210.02720).

GNP minimises ``L + λ‖∇L‖``. The penalty's gradient ``λ·H∇L/‖∇L‖`` is a Hessian-vector product,
taken by a finite difference of step r (``rho``) along the normalised gradient, which turns the
update into a mix of two gradients (the paper's update as its release's README writes it;
``docs/optimizers.md``, "GNP and finite-difference GR"):

    g  = ∇L_B(θ)
    e  = rho · g/(‖g‖ + ξ)          (normalize=True)        e = rho · g   (normalize=False)
    g2 = ∇L_B(θ + e)
    c  = g                          (normalize_clean=False: the paper's equation and README)
    c  = g/(‖g‖ + ξ)                (normalize_clean=True: the release's default flag)
    G  = (1 − alpha)·c + alpha·g2       alpha = λ/rho

ξ = 1e-12. alpha = 1 with ``normalize`` is SAM. With ``normalize_clean=False``: alpha = 0 is the
base optimizer (with a wasted pass), and rho = 0 gives g2 = g, so G = g to rounding (with it true,
G = (1−alpha)·g/‖g‖ + alpha·g2).

Karakida et al.'s gradient regularisation ``L + (γ/2)‖∇L‖²`` has the gradient ``∇L + γ·H∇L``; their
forward difference F-GR takes ``H∇L ≈ (∇L(θ + εg) − ∇L(θ))/ε``, which makes
``G = (1 − γ/ε)·g + (γ/ε)·∇L(θ + εg)``: exactly GNP with ``rho=ε, alpha=γ/ε, normalize=False``
(``flatmin/conf/optimizer/fd_gr.yaml``). Their backward difference B-GR is ``rho=−ε, alpha=−γ/ε``, so rho and
alpha take any sign here.

Release: zhaoyang-0204/gnp@e803362 ``training/training_core.py`` (JAX, ``get_gnp_gradient``; not run
here, transcribed). Where flatmin differs, and why:

* Weight decay: the release puts ``½·l2·Σθ²`` in the loss, so it enters g, e and g2 (and is mixed
  by alpha); flatmin leaves weight decay to the base optimizer, applied once at θ, as it does for
  SAM's JAX release.
* Its ``dual_vector`` divides by ‖g‖ without ξ; flatmin adds ξ = 1e-12 (a 0 gradient stays finite).
* It clips the final G to global norm 5.0 (``config.gradient_clipping``); flatmin clips only when
  ``trainer.grad_clip_norm`` is set (then on the same final G).
* ``r > 0`` is required for GNP there (otherwise one plain pass: no B-GR); flatmin always takes
  the two passes.
* BatchNorm state comes from the first pass in both; the perturbation is per replica in both
  (its ``gnp.sync_perturbations`` default false).
* Its GR warm-up (``gr_warmup_strategy``, the 2024 paper; ``utli.generate_warmup_fn``) ramps r
  ("r") or alpha ("lambda") linearly from 0 over the LR warm-up epochs, then holds it; "zero" takes
  plain steps for those epochs, which is alpha = 0 then. Both are schedules of rho or alpha, but
  not of the kinds ``optimizer.schedules`` has today (``linear`` ramps over the whole run,
  ``proportional_to_lr`` also follows the LR's decay): not offered yet. Nor is its hybrid training
  (a GNP step with probability p, else a plain one).
* The mix and the normalisation of c run over every tensor with a gradient; e and its norm only
  over the groups that may be perturbed (``perturb``), the release's whole tree when all are.

Cost: 2 passes; 2 extra parameter-sized buffers: θ and a copy of g (none for g when every group has
alpha = 1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from flatmin.checks import BOOLEAN, NUMBER
from flatmin.optim.hyper import AROUND_TENFOLD, Card, Hyper
from flatmin.optim.multipass import NORM_EPS, ActiveParams, Closure, MultiPassOptimizer, global_norm


class GNP(MultiPassOptimizer, key="gnp"):
    """Gradient-norm penalty over any base optimizer; F-GR and B-GR are settings of it.

    Defaults are the release's CIFAR recipes (``recipes/resnet-cifar.sh``, ``wideresnet-cifar.sh``):
    r 0.1, alpha 0.8, normalised perturbation, and the paper's clean gradient (``normalize_clean``
    false; the release's flag ``gnp.norm_perturbations`` has defaulted to true since its commit
    07895f1, 2022-06-26). Gradient accumulation: each micro-batch runs both passes on its own
    gradient. Returns the loss of the first pass (at θ).
    """

    hyperparameters = {
        "rho": Hyper(0.1, NUMBER, "[r] the finite-difference step; negative: a backward difference (B-GR)",
                     schedulable=True, search=AROUND_TENFOLD),
        "alpha": Hyper(0.8, NUMBER, "G = (1 − alpha)·c + alpha·g2; alpha = λ/rho; 1 with normalize is SAM",
                       schedulable=True),
        "normalize": Hyper(True, BOOLEAN, "e = rho·g/‖g‖ (GNP); false: e = rho·g (Karakida's F-GR, B-GR)",
                           structural=True),
        "normalize_clean": Hyper(False, BOOLEAN, "c = g/‖g‖ (the release's gnp.norm_perturbations); false: c = g",
                                 structural=True),
    }
    card = Card("GNP (gradient-norm penalty); F-GR/B-GR (`fd_gr`)", "2", "2 (θ, g)",
                "Zhao, Zhang & Hu, ICML 2022; Karakida et al., ICML 2023")
    passes_per_step = 2

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        """Two passes on the same mini-batch; returns the loss of the first (at θ)."""
        loss = self.take_pass(closure)                          # g = ∇L_B(θ)
        active = self.active()
        moved = active.perturbed
        theta = self.save("theta", moved.params, moved.params)
        mixed = [entry for entry in active if entry.options["alpha"] != 1]
        for entry in mixed:                                     # c = g (or g/‖g‖, below)
            self.save("clean", entry.params, entry.grads)
        if self.normalize_clean and mixed:
            self._normalize_clean(active)
        self.ascend(moved, "rho", normalize=self.normalize)     # θ ← θ + e
        self.take_pass(closure)                                 # g2 = ∇L_B(θ + e)
        self.restore(moved.params, theta)
        for entry in mixed:                                     # G = (1 − alpha)·c + alpha·g2
            alpha = entry.options["alpha"]
            torch._foreach_mul_(entry.grads, alpha)
            torch._foreach_add_(entry.grads, self.buffers("clean", entry.params), alpha=1 - alpha)
        self.base_step()
        return loss

    def _normalize_clean(self, active: ActiveParams) -> None:
        """c ← g/(‖g‖ + ξ), ‖g‖ over every tensor with a gradient."""
        norm = global_norm(active.grads) + NORM_EPS
        for entry in active:
            if entry.options["alpha"] != 1:
                torch._foreach_div_(self.buffers("clean", entry.params), norm)
