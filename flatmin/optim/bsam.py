"""bSAM: Bayesian SAM (Möllenhoff & Khan, "SAM as an Optimal Relaxation of Bayes", ICLR 2023,
arXiv 2210.01620, its bSAM algorithm).

bSAM is a whole optimizer, not a method over a base optimizer: SAM's ascent inside an Adam-like
variational update of a diagonal Gaussian posterior ``N(θ, 1/(N·s))``. With ``N = num_data ·
data_factor`` and ``wd = prior_precision / N``, one step on the mini-batch B is (elementwise; the
release: team-approx-bayes/bayesian-sam@936eec1 ``optim.py`` ``build_bsam_optimizer``, with ``wd``
and ``N`` from ``train.py`` ``get_optimizer`` and ``main``)::

    chunks C_j = torch.arange(B).chunk(batch_split)      contiguous, as the release's reshape
    for each j:
        ε_j ~ N(0, I) per tensor                          drawn before chunk j's first pass
        g_j  = ∇L_Cj(θ + ε_j/sqrt(N·s))                   noisy pass (a sample of the posterior)
        gp_j = ∇L_Cj(θ + rho·g_j/s)                       perturbed pass, from θ (not from the sample); no norm
        gs_j = sqrt(s·g_j²)
    gs = mean_j gs_j;   gp = mean_j gp_j
    m ← β1·m + (1−β1)·(gp + wd·θ);   θ ← θ − lr·m/s;   s ← β2·s + (1−β2)·(gs + damping + wd)

With ``batch_split = 1`` (the default) the one chunk is the whole batch, taken by plain
``closure()`` calls. ``batch_split > 1`` is the release's ``--batchsplit`` (m-sharpness with
m = B/batch_split) and needs the extended closure protocol (``closure(indices=C_j)``).
Names in brackets below are the release's flags. ``state`` keeps m and s (both checkpointed).
Cost: 2·batch_split passes, each on B/batch_split rows (the compute of 2 full passes); 2
parameter-sized state tensors (m, s) and 2 scratch buffers (the saved θ, gs), 3 with
``batch_split > 1`` (the sum of the gp_j). Transient between passes: with ``batch_split > 1``
each chunk's ``s·g_j²``; ε, ``sqrt(N·s)`` and the update's terms use existing storage.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

from flatmin.checks import BETAS, NON_NEGATIVE, POSITIVE, POSITIVE_INT, optional
from flatmin.optim.hyper import AROUND_TENFOLD, BatchRequirement, Card, Hyper, Requirement
from flatmin.optim.multipass import ActiveGroup, ActiveParams, Closure, MultiPassOptimizer, noise_in_gradients

#: Why a param group's (and so ``optimizer.weight_decay``) must be 0.
OWN_WEIGHT_DECAY = "bSAM's weight decay is prior_precision/(num_data·data_factor) on every tensor, so weight_decay " \
                   "must be 0"


def unequal_split(batch_split: int, rows: int) -> str | None:
    """Why a batch of ``rows`` rows cannot be cut into ``batch_split`` equal sub-batches, or None."""
    if rows % batch_split == 0:
        return None
    return (f"BSAM: the batch has B={rows} rows, not divisible by batch_split={batch_split}: the sub-batches must "
            "be equal (the release reshapes the batch into batch_split of them); choose a batch size divisible by "
            "batch_split")


def config_with_weight_decay(settings: Mapping[str, Any]) -> str | None:
    """The config's side of the constructor's weight-decay check: ``optimizer.weight_decay``."""
    decay = settings.get("weight_decay", 0.0)
    return None if decay == 0 else f"optimizer.weight_decay is {decay}; {OWN_WEIGHT_DECAY}"


class BSAM(MultiPassOptimizer, key="bsam"):
    """Bayesian SAM, the release's ``build_bsam_optimizer`` on flatmin's step contract.

    ``BSAM(params, num_data=N, ...)``: ``num_data`` (the number of training examples) is required;
    ``build_optimizer`` sets it to the training split's size when the config says ``num_data: null``.
    Defaults are the release's README command for ResNet-18 on CIFAR-10/100 (``--alpha 0.5 --beta1
    0.9 --beta2 0.999 --priorprec 40 --rho 0.01``; ``--dafactor 4`` is ``data_factor``, whose default
    here is 1 so that ``num_data`` means N).

    The update of m, θ and s is the base optimizer's step (:class:`BSAMUpdate`, built here on the
    param groups), so the trainer's gate acts between the passes and the update as for every
    method: gradient accumulation and DDP average ``G`` (= gp) and ``gs`` alike
    (:meth:`gate_tensors`), clipping clips gp, an fp16 overflow skips the update. Accumulating k
    micro-batches then computes what the release's ``--batchsplit k`` computes on their union (each
    its own noise, gs and gp; their means update), except for BatchNorm's running statistics, which
    follow flatmin's rule (tested: ``test_gradient_accumulation_is_the_release_batch_split``).

    Where flatmin differs from the release, and why:

    * ε comes from torch's generator (``Tensor.normal_`` into each tensor's ``.grad``, the values
      ``torch.randn_like`` would draw, per tensor in param-group order, before the noisy pass), not
      JAX's: only its distribution is the release's. ``torch.manual_seed``
      makes a run reproducible and the trainer's checkpoint resumes it.
    * The noise is ``ε/sqrt(N·s)`` and the update ``θ − lr·m/s`` (rounding-level differences from the
      release's ``sqrt(1/(N·s))·ε`` and ``(lr·m)/s``).
    * BatchNorm running statistics come from the first call of the step only (flatmin's first-pass
      rule): the noisy pass, on chunk 0's rows when ``batch_split > 1``; the release keeps those of
      sub-batch 0 after both of its passes.
    * ``step`` returns the noisy passes' loss, the mean over the chunks (the loss at posterior
      samples, which the trainer's first-pass accuracy also sees); the release logs the perturbed
      passes' loss.
    * Param groups with ``perturb=False`` get no noise and no ascent (they are still updated, and
      their ``gs`` comes from the noisy pass); the release perturbs every tensor.
    * The learning rate follows flatmin's scheduler (the release: a linear warm-up over
      ``--warmup`` epochs, then a cosine per epoch).
    * ``batch_split > 1`` needs the batch size B divisible by it (the release reshapes the batch into
      ``batch_split`` equal sub-batches): otherwise ``step`` raises a ``ValueError`` naming B and
      batch_split before any pass. The trainer's training loaders drop the last incomplete batch,
      so B is always ``dataset.batch_size`` (per replica) and only that must be divisible. A plain
      closure (without the extended protocol) is a ``TypeError``, also before any pass.

    The weight decay is bSAM's own ``prior_precision/N`` on every tensor (the release has no other),
    so a param group's ``weight_decay`` must be 0.
    """

    hyperparameters = {
        "lr": Hyper(0.5, POSITIVE, "[--alpha] step size: θ ← θ − lr·m/s"),
        "betas": Hyper((0.9, 0.999), BETAS, "[--beta1, --beta2] decay of m and of s"),
        "prior_precision": Hyper(40.0, NON_NEGATIVE,
                                 "[--priorprec] the prior's precision δ: weight decay δ/N on every tensor and in s"),
        "rho": Hyper(0.01, NON_NEGATIVE, "[--rho] the ascent θ + rho·g/s (no norm)", schedulable=True,
                     search=AROUND_TENFOLD),
        "num_data": Hyper(None, optional(POSITIVE),
                          "[ndata] training examples (required; in a config, null: the training split's size)"),
        "data_factor": Hyper(1.0, POSITIVE, "[--dafactor] N = num_data·data_factor (4 in the release's CIFAR "
                                            "commands, for the data augmentation)"),
        "damping": Hyper(0.1, NON_NEGATIVE, "[--damping] added to s's update"),
        "s_init": Hyper(1.0, POSITIVE, "[--custominit] the initial precision s"),
        "batch_split": Hyper(1, POSITIVE_INT, "[--batchsplit] contiguous sub-batches of the batch, each with its own "
                                              "noise, noisy and perturbed pass (m-sharpness); B must be divisible by "
                                              "it; more than 1 needs the extended closure", structural=True),
    }
    requirements = (Requirement(config_with_weight_decay),)
    batch_requirements = (BatchRequirement(lambda settings, rows: unequal_split(BSAM.setting(settings, "batch_split"),
                                                                              rows)),)
    card = Card("bSAM (a full optimizer)", "2 (`2·batch_split` on `B/batch_split` rows each)",
                "2 (θ, gs; + gp's sum if `batch_split > 1`) + state m, s", "Möllenhoff & Khan, ICLR 2023")
    full_optimizer = True

    def __init__(self, params: Any, **hyperparameters: Any) -> None:
        unknown = sorted(set(hyperparameters) - set(self.hyperparameters))
        if unknown:
            raise TypeError(f"BSAM got keyword arguments that are not its hyperparameters ({', '.join(unknown)})")
        betas = hyperparameters.get("betas")
        if isinstance(betas, Sequence) and not isinstance(betas, str):
            hyperparameters["betas"] = tuple(betas)         # a config's list: a plain tuple in the state_dict
        super().__init__(None, BSAMUpdate(params, self.buffers), **hyperparameters)
        for group in self.param_groups:
            if group["num_data"] is None:
                raise ValueError("BSAM: num_data is required: the number of training examples (the release's ndata)")
            if group.get("weight_decay", 0.0) != 0:
                raise ValueError(f"BSAM: a param group has weight_decay={group['weight_decay']}; {OWN_WEIGHT_DECAY}")
        self._gs: list[Tensor] = []

    @property
    def passes_per_step(self) -> int:  # type: ignore[override]
        return 2 * self.batch_split

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        """The noisy and the perturbed pass on each chunk of the mini-batch, then the update (the base
        step). Returns the noisy passes' loss (their mean over the chunks)."""
        if self.batch_split > 1:
            return self._split_step(closure)
        sampled = self.active(with_grad=False).perturbed    # before any pass: all that may get a gradient
        theta = self.save("theta", sampled.params, sampled.params)
        self._sample(sampled)                                # θ + ε/sqrt(N·s)
        loss = self.take_pass(closure)                       # g = ∇L_B(θ + ε/sqrt(N·s))       pass 1
        self.restore(sampled.params, theta)
        active = self.active()
        self._gs = self._precision_gradients(active)         # gs = sqrt(s·g²)
        self._ascend(active.perturbed)                       # θ + rho·g/s
        self.take_pass(closure)                              # G = gp = ∇L_B(θ + rho·g/s)      pass 2
        self.restore(sampled.params, theta)
        self.base_step()                                     # m, θ, s from G and gs
        return loss

    def _split_step(self, closure: Closure) -> Tensor:
        """``batch_split > 1``: per contiguous chunk C_j of the rows, its own noise ε_j, the noisy pass
        and the perturbed pass ``closure(indices=C_j)``; gs and gp are the chunks' means.

        A tensor that gets no gradient in a chunk counts 0 there (the chunk's loss does not depend
        on it); one that gets none in any chunk is left without a gradient, and so not updated.
        """
        batch_size = self.require_extended_closure(closure)
        if (problem := unequal_split(self.batch_split, batch_size)) is not None:
            raise ValueError(problem)
        everything = self.active(with_grad=False)          # before any pass: all that may get a gradient
        sampled = everything.perturbed
        theta = self.save("theta", sampled.params, sampled.params)
        gs_sum, gp_sum = self.buffers("gs", everything.params), self.buffers("gp", everything.params)
        if gs_sum:
            torch._foreach_zero_(gs_sum)
            torch._foreach_zero_(gp_sum)
        gs_of, gp_of = dict(zip(map(id, everything.params), gs_sum)), dict(zip(map(id, everything.params), gp_sum))
        touched: set[int] = set()                          # ids of the tensors that got a gradient
        losses = []
        for rows in torch.arange(batch_size).chunk(self.batch_split):
            self._sample(sampled)                            # θ + ε_j/sqrt(N·s), ε_j drawn now
            losses.append(self.take_pass(closure, indices=rows))     # g_j = ∇L_Cj(θ + ε_j/sqrt(N·s))
            self.restore(sampled.params, theta)
            active = self.active()
            touched.update(map(id, active.params))
            for entry in active:                             # gs += sqrt(s·g_j²)
                squares = torch._foreach_mul(entry.grads, entry.grads)
                torch._foreach_mul_(squares, self._precision(entry))
                torch._foreach_sqrt_(squares)
                torch._foreach_add_([gs_of[id(p)] for p in entry.params], squares)
            self._ascend(active.perturbed)                   # θ + rho·g_j/s
            self.take_pass(closure, indices=rows)            # gp_j = ∇L_Cj(θ + rho·g_j/s)
            self.restore(sampled.params, theta)
            active = self.active()
            if active:                                       # gp += gp_j
                torch._foreach_add_([gp_of[id(p)] for p in active.params], active.grads)
            touched.update(map(id, active.params))
        self._gs = self._mean_gradients(everything, touched, gs_of, gp_of)
        self.base_step()                                     # m, θ, s from G = gp and gs
        return torch.stack(losses).mean()

    def _mean_gradients(self, everything: ActiveParams, touched: set[int], gs_of: dict[int, Tensor],
                        gp_of: dict[int, Tensor]) -> list[Tensor]:
        """``.grad`` ← gp, the mean of the chunks' gp_j, and the ``gs`` buffers ← the mean of their gs_j,
        for every tensor that had a gradient in some chunk (the others get no gradient); returns the
        ``gs`` of the tensors with a gradient, in their order (the gate's and the update's)."""
        params = [p for p in everything.params if id(p) in touched]
        for p in params:
            if p.grad is None:
                p.grad = torch.empty_like(p)
        for p in everything.params:
            if id(p) not in touched:
                p.grad = None
        if not params:
            return []
        gs, gp = [gs_of[id(p)] for p in params], [gp_of[id(p)] for p in params]
        torch._foreach_div_(gs, self.batch_split)
        torch._foreach_div_(gp, self.batch_split)
        torch._foreach_copy_([p.grad for p in params], gp)
        return gs

    def gate_tensors(self) -> list[Tensor]:
        """``gs``: the trainer averages it with ``G`` (accumulation, replicas)."""
        return self._gs

    def _precision(self, entry: ActiveGroup) -> list[Tensor]:
        """The group's s; before the first update (no state yet), s_init."""
        state = self.base_optimizer.state
        return [state[p]["s"] if "s" in state.get(p, ()) else torch.full_like(p, entry.options["s_init"])
                for p in entry.params]

    def _sample(self, sampled: ActiveParams) -> None:
        """θ ← θ + ε/sqrt(N·s), a fresh ε ~ N(0, I) per tensor (``torch.randn_like``'s draws), with
        nothing parameter-sized allocated: ε is drawn in place into each tensor's ``.grad`` (used up
        before a noisy pass, which overwrites it; a transient tensor where there is none yet), and
        sqrt(N·s) is built in the parameters' own storage, which then take θ back from its saved copy."""
        for entry in sampled:
            noise = noise_in_gradients(entry.params, Tensor.normal_)
            n_data = entry.options["num_data"] * entry.options["data_factor"]
            std_inverse = entry.params                                      # sqrt(N·s) = 1/std
            torch._foreach_copy_(std_inverse, self._precision(entry))
            torch._foreach_mul_(std_inverse, n_data)
            torch._foreach_sqrt_(std_inverse)
            torch._foreach_div_(noise, std_inverse)                         # ε/sqrt(N·s)
            torch._foreach_copy_(entry.params, self.buffers("theta", entry.params))
            torch._foreach_add_(entry.params, noise)

    def _precision_gradients(self, active: ActiveParams) -> list[Tensor]:
        """``gs = sqrt(s·g²)`` from the noisy pass's gradients, into the scratch buffers ``gs``."""
        for entry in active:
            gs = self.buffers("gs", entry.params)
            torch._foreach_copy_(gs, entry.grads)
            torch._foreach_mul_(gs, entry.grads)
            torch._foreach_mul_(gs, self._precision(entry))
            torch._foreach_sqrt_(gs)
        return self.buffers("gs", active.params)

    def _ascend(self, moved: ActiveParams) -> None:
        """θ ← θ + rho·g/s, built in the gradients (the next pass overwrites them)."""
        for entry in moved:
            grads = entry.grads
            torch._foreach_mul_(grads, entry.options["rho"])
            torch._foreach_div_(grads, self._precision(entry))
            torch._foreach_add_(entry.params, grads)


BSAM.__signature__ = inspect.Signature(     # type: ignore[attr-defined]
    [inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD),
     *(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=hyper.default)
       for name, hyper in BSAM.hyperparameters.items())])


class BSAMUpdate(Optimizer):
    """bSAM's update, as the base step of :class:`BSAM` (which shares its param groups and options):
    from ``G`` = gp in ``.grad`` and ``gs`` (BSAM's scratch buffers, read through ``precision_gradients``)::

        m ← β1·m + (1−β1)·(G + wd·θ);   θ ← θ − lr·m/s;   s ← β2·s + (1−β2)·(gs + damping + wd)

    with ``wd = prior_precision/(num_data·data_factor)``. State m = 0 and s = s_init are created at
    the first update, so a skipped update leaves no state behind.
    """

    def __init__(self, params: Any, precision_gradients: Callable[[str, list[Tensor]], list[Tensor]]) -> None:
        super().__init__(params, {})
        self._precision_gradients = precision_gradients

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            beta1, beta2 = group["betas"]
            wd = group["prior_precision"] / (group["num_data"] * group["data_factor"])
            m, s = self._state(params, group["s_init"])
            torch._foreach_mul_(m, beta1)                 # (1−β1)·(G + wd·θ) added as its two terms:
            torch._foreach_add_(m, [p.grad for p in params], alpha=1 - beta1)     # G + wd·θ is not allocated
            torch._foreach_add_(m, params, alpha=(1 - beta1) * wd)
            torch._foreach_addcdiv_(params, m, s, value=-group["lr"])             # θ − lr·m/s (s before its update)
            gs = self._precision_gradients("gs", params)
            torch._foreach_add_(gs, group["damping"])
            torch._foreach_add_(gs, wd)
            torch._foreach_mul_(s, beta2)
            torch._foreach_add_(s, gs, alpha=1 - beta2)

    def _state(self, params: list[Tensor], s_init: float) -> tuple[list[Tensor], list[Tensor]]:
        for p in params:
            state = self.state[p]
            if not state:
                state["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["s"] = torch.full_like(p, s_init, memory_format=torch.preserve_format)
        return [self.state[p]["m"] for p in params], [self.state[p]["s"] for p in params]
