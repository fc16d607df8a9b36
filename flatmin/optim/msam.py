"""MSAM, Momentum-SAM (Becker, Altrock & Risse, "Momentum-SAM: Sharpness Aware Minimization without
Computational Overhead", arXiv 2401.12033, 2024).

SAM's ascent needs a second pass; MSAM perturbs instead along the base optimizer's first moment,
which already points uphill of the coming update, and so takes a single pass
(``docs/optimizers.md``, "MSAM"):

    v  = the base optimizer's first moment (SGD's momentum buffer, Adam's exp_avg)
    θ̃  = θ − rho · v/(‖v‖ + 1e-12)         # none before the first base step (no v yet)
    G  = ∇L_B(θ̃)                           # the only pass
    θ restored bit for bit;  base step with G at θ

Cost: 1 pass; 1 extra parameter-sized buffer (θ).

The release (MarlonBecker/MSAM@780fa4f ``optimizer/msam.py``, ``optimizer/adamW_msam.py``) keeps
the parameters at θ̃ *between* steps: its step moves back by ``+rho·v/‖v‖``, steps, and moves up
again along the new moment, and its training loop calls ``move_back_from_momentumAscent()``
before each evaluation. flatmin perturbs at the start of a step and restores at its end, so between
steps the parameters are θ (what is evaluated and saved), and a rho changed by a schedule takes
effect at once (the release moves back with the new rho from a point reached with the old one).
The trajectory is the same (``tests/optim/test_msam.py``), except where the release's optimizers
differ from torch's:

* ``MSAM`` is its own SGD: nesterov is ignored, and the weight decay ``wd·θ̃`` is added to the
  gradient at the perturbed point; flatmin's base SGD decays θ (``wd·θ``).
* ``AdamW_MSAM`` decays the weights after the Adam update (``θ ← (θ − lr·u)(1 − lr·wd)``); torch's
  AdamW decays before it. Equal at wd = 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from flatmin.checks import NON_NEGATIVE
from flatmin.optim.hyper import AROUND_TENFOLD, Card, Hyper, Requirement
from flatmin.optim.multipass import (NORM_EPS, ActiveGroup, ActiveParams, Closure, MultiPassOptimizer, _signature,
                                     global_norm)


#: What MSAM perturbs along, and so what its base must keep.
FIRST_MOMENT_NEEDED = "MSAM perturbs along the base optimizer's first moment, so it needs SGD with momentum > 0 or " \
                      "Adam/AdamW as its base (got {})"


def first_moment_key(base: Optimizer) -> str:
    """The name of ``base``'s first moment in its state, or a ValueError saying what MSAM needs."""
    if isinstance(base, (torch.optim.Adam, torch.optim.AdamW)):
        return "exp_avg"
    if isinstance(base, torch.optim.SGD):
        momenta = sorted({group["momentum"] for group in base.param_groups})
        if all(momentum > 0 for momentum in momenta):
            return "momentum_buffer"
        got = f"SGD with momentum {', '.join(map(str, momenta))}"
    else:
        got = type(base).__name__
    raise ValueError(FIRST_MOMENT_NEEDED.format(got))


def config_without_first_moment(settings: Mapping[str, Any]) -> str | None:
    """The config's side of :func:`first_moment_key`: ``optimizer.base`` and ``optimizer.momentum``."""
    base, momentum = settings.get("base"), settings.get("momentum")
    if base in ("adam", "adamw") or (base == "sgd" and momentum > 0):
        return None
    return FIRST_MOMENT_NEEDED.format(f"SGD with momentum {momentum}" if base == "sgd" else base)


class MSAM(MultiPassOptimizer, key="msam"):
    """Momentum-SAM over SGD with momentum or Adam/AdamW (anything else is a ValueError).

    Default rho 3, the release's for every setting it publishes (SGD and AdamW; its classes default
    to 0.3 and 1). The first moment is read from the base optimizer's state, never copied; the
    norm ‖v‖ is over the tensors that may be perturbed (``perturb``) and have a moment. The only
    pass is at θ̃, so BatchNorm's running statistics describe θ̃ (the release re-estimates them
    at θ with a forward-only epoch at the end of training). Gradient accumulation: every micro-batch
    of a step uses the same v (the base state changes only at the base step).
    Returns the loss of the pass (at θ̃).
    """

    hyperparameters = {
        "rho": Hyper(3.0, NON_NEGATIVE, "radius of the step against the first moment: θ̃ = θ − rho·v/‖v‖",
                     schedulable=True, search=AROUND_TENFOLD),
    }
    requirements = (Requirement(config_without_first_moment),)
    card = Card("MSAM (Momentum-SAM)", "1", "1 (θ)", "Becker, Altrock & Risse, arXiv 2401.12033")
    passes_per_step = 1

    def __init__(self, params: Any, base_optimizer: type[Optimizer] | Optimizer, **kwargs: Any) -> None:
        super().__init__(params, base_optimizer, **kwargs)
        self.moment_key = first_moment_key(self.base_optimizer)

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        """θ̃ = θ − rho·v/‖v‖, the pass there, θ restored, the base step; returns the pass's loss."""
        moved = self._with_moment(self.active(with_grad=False).perturbed)
        theta = self.save("theta", moved.params, moved.params)
        if moved:
            moments = [self.base_optimizer.state[p][self.moment_key] for p in moved.params]
            inverse_norm = 1 / (global_norm(moments) + NORM_EPS)
            for entry in moved:                                 # θ ← v·(−rho/‖v‖) + θ
                torch._foreach_copy_(entry.params, [self.base_optimizer.state[p][self.moment_key]
                                                    for p in entry.params])
                torch._foreach_mul_(entry.params, -(entry.options["rho"] * inverse_norm))
                torch._foreach_add_(entry.params, self.buffers("theta", entry.params))
        loss = self.take_pass(closure)                          # G = ∇L_B(θ̃)
        self.restore(moved.params, theta)
        self.base_step()
        return loss

    def _with_moment(self, active: ActiveParams) -> ActiveParams:
        """The parameters of ``active`` whose first moment exists (none before the first base step).
        The base state is read with ``get``, so no empty entry is created for the others."""
        result = ActiveParams()
        for entry in active:
            params = [p for p in entry.params if self.moment_key in self.base_optimizer.state.get(p, {})]
            if params:
                result.append(ActiveGroup(entry.options, params))
        return result


MSAM.__signature__ = _signature(MSAM.hyperparameters)  # type: ignore[attr-defined]
