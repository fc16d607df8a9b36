"""Lookahead (Zhang, Lucas, Hinton & Ba, NeurIPS 2019) over any optimizer of the contract.

The wrapped ("fast") optimizer takes its steps as usual; every k of them the slow weights φ move
part of the way towards the fast ones and the fast weights restart from there:

    φ ← φ + alpha·(θ − φ),   θ ← φ

This is the linear-interpolation scheme that "Stable Nonconvex-Nonconcave Training via Linear
Interpolation" (Pethick, Xie & Cevher, NeurIPS 2023, arXiv 2310.13459) analyses. Its RAPP (relaxed
approximate proximal point, Alg. 1 with §5's inner solver) is Lookahead with a proximal term on the
inner steps: ``prox`` adds ``prox·(θ − φ)`` to the gradient ``G`` before each base step, so over
plain SGD (lr = γ, no momentum, no weight decay) with ``prox = 1/γ`` each inner step is
``θ ← φ − γ·G(θ)``, RAPP's ``w ← z − γF(w)`` that always steps from z, and the k-th is followed by
RAPP's ``z ← (1−λ)z + λw`` (``k = τ``, ``alpha = λ``). ``prox = 0`` is plain Lookahead.
Buffers such as BatchNorm statistics are not interpolated. Cost: the wrapped optimizer's passes;
1 extra parameter-sized buffer (φ, state).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor
from torch.optim import Optimizer

from flatmin.checks import NON_NEGATIVE, Check
from flatmin.optim.hyper import Card
from flatmin.optim.multipass import Closure
from flatmin.optim.wrapper import OptimizerWrapper, swapped_in

#: ``prox``: a number >= 0, or ``auto`` (1/lr of each param group at each step).
PROX = Check(lambda value: value == "auto" or NON_NEGATIVE(value), "a number >= 0 or auto (1/lr)")


class Lookahead(OptimizerWrapper):
    """Lookahead over ``optimizer``: a base optimizer (SGD, Adam, …) or a multi-pass method (SAM, …).

    It shares the wrapped optimizer's param groups and keeps its ``base_step_gate``: the gate set on
    this object decides every base step of the wrapped one. Only steps whose base step actually ran
    count towards k, so a step skipped for an fp16 overflow or one micro-batch of an unfinished
    gradient accumulation does not advance the slow weights. ``state_dict`` carries φ, the count and
    the wrapped optimizer's state. Defaults k = 5, alpha = 0.8: the release's
    (michaelrzhang/lookahead ``lookahead_pytorch.py``, ``la_steps=5, la_alpha=0.8``; the values of the
    paper's experiments were not read here).

    ``prox`` (RAPP, Pethick et al., NeurIPS 2023): on every base step that runs, after the wrapped
    method has left ``G`` in ``.grad`` and the trainer's gate has passed it (accumulated, averaged,
    clipped), ``.grad ← G + prox·(θ − φ)``. A number, or ``"auto"``: ``1/lr`` of each param group at
    that step, so the identity with RAPP over plain SGD holds under any learning-rate schedule (a
    group whose lr is 0 gets no term). With momentum or weight decay in the base the term goes
    through them (that is no longer RAPP). ``prox = 0`` is plain Lookahead, bit for bit.
    """

    evaluated = "the slow weights"
    card = Card("Lookahead; RAPP (`prox`)", "the wrapped one's", "+1 (slow weights φ)",
                "Zhang et al., NeurIPS 2019; Pethick et al., NeurIPS 2023")

    def __init__(self, optimizer: Optimizer, k: int = 5, alpha: float = 0.8, prox: float | str = 0.0) -> None:
        if k < 1:
            raise ValueError(f"k must be a positive integer, got {k}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if not PROX(prox):
            raise ValueError(f"prox must be {PROX.requirement}, got {prox!r}")
        super().__init__(optimizer)
        self.k = k
        self.alpha = alpha
        self.prox = prox

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        """One step of the wrapped optimizer; every k-th base step, the slow-weight update."""
        self._slow_weights()                                     # φ = θ₀ on the first call
        return super().step(closure)

    def after_base_step(self) -> None:
        """Every k-th base step: ``φ ← φ + alpha·(θ − φ)``, ``θ ← φ``."""
        if self.base_steps % self.k == 0:
            params = self._params()
            slow = self._slow_weights()
            torch._foreach_lerp_(slow, params, self.alpha)
            torch._foreach_copy_(params, slow)

    def before_base_step(self) -> None:
        """RAPP's proximal term, when ``prox`` is not 0."""
        if self.prox != 0:
            self._add_proximal_term()

    def _add_proximal_term(self) -> None:
        """``.grad ← G + prox·(θ − φ)`` for every parameter with a gradient."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if self.prox == "auto":
                coefficient = 1.0 / group["lr"] if group["lr"] != 0 else 0.0
            else:
                coefficient = self.prox
            if not params or coefficient == 0:
                continue
            distance = torch._foreach_sub(params, [self.state[p]["slow"] for p in params])    # θ − φ
            torch._foreach_add_([p.grad for p in params], distance, alpha=coefficient)

    def evaluation_weights(self) -> contextlib.AbstractContextManager[None]:
        """The slow weights φ in the model (the release evaluates them: michaelrzhang/lookahead's
        ``_backup_and_load_cache``); nothing before the first step. The wrapped method's own
        evaluation weights are not used: a wrapper's context is its own."""
        params = [p for p in self._params() if "slow" in self.state.get(p, {})]
        return swapped_in(params, [self.state[p]["slow"] for p in params])

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _slow_weights(self) -> list[Tensor]:
        params = self._params()
        for param in params:
            if "slow" not in self.state[param]:
                self.state[param]["slow"] = param.detach().clone(memory_format=torch.preserve_format)
        return [self.state[param]["slow"] for param in params]
