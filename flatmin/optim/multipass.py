"""The machinery every multi-pass method shares: save θ, perturb, take a pass, restore, step.

The contract (``docs/optimizers.md``, "The common contract"): a method evaluates the gradient of the
*same* mini-batch at one or more points near θ by calling ``closure()``, leaves the gradient ``G``
it wants in ``p.grad``, copies θ back bit for bit, and lets the *base* optimizer (SGD, Adam, …)
take its ordinary step with ``G``. Weight decay, momentum and Adam moments are the base
optimizer's, applied once, at θ.

All tensor work goes through ``torch._foreach_*`` kernels and global norms stay on the device, so
a step never synchronises with the host. A method's numeric hyperparameters live in the param
groups (shared with the base optimizer), so schedules can change them per group like ``lr``.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, ClassVar, Iterator

import torch
from torch import Tensor
from torch.optim import Optimizer

from flatmin.optim.hyper import BatchRequirement, Card, Hyper, Requirement

Closure = Callable[..., Tensor]

#: The keywords of the extended closure protocol (``docs/optimizers.md``, "The extended closure"):
#: ``closure(indices=None, backward=True, per_example=False)`` with an int attribute ``batch_size``.
EXTENDED_CLOSURE_KEYWORDS = ("indices", "backward", "per_example")


def extended_closure_lacks(closure: Closure) -> list[str]:
    """What ``closure`` lacks of the extended protocol (empty when it has it all): the keywords its
    signature does not accept (a ``**kwargs`` accepts them all) and the int ``batch_size``."""
    try:
        parameters = inspect.signature(closure).parameters.values()
    except (TypeError, ValueError):
        parameters = []
    names = {parameter.name for parameter in parameters}
    any_keyword = any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters)
    lacks = [f"{keyword}=" for keyword in EXTENDED_CLOSURE_KEYWORDS if not any_keyword and keyword not in names]
    batch_size = getattr(closure, "batch_size", None)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool):
        lacks.append("an int attribute batch_size")
    return lacks


def evaluation_weights(optimizer: Optimizer) -> contextlib.AbstractContextManager[None]:
    """``optimizer.evaluation_weights()`` for a flatmin optimizer, nothing for any other (torch's SGD)."""
    if isinstance(optimizer, MultiPassOptimizer):
        return optimizer.evaluation_weights()
    return contextlib.nullcontext()

#: key → method class, filled as the method modules are imported: a subclass given a ``key``
#: (``class GSAM(MultiPassOptimizer, key="gsam")``) registers itself for ``optimizer.method``.
METHODS: dict[str, type[MultiPassOptimizer]] = {}

#: Added to norms in fp32 or wider; 1e-12 would underflow in fp16.
NORM_EPS = 1e-12


def accumulation_dtype(tensor: Tensor) -> torch.dtype:
    """fp32 for reductions and counters, fp64 when the tensors are fp64 (float64 formula checks)."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def global_norm(tensors: list[Tensor]) -> Tensor:
    """The L2 norm over all ``tensors`` seen as one vector, as a device tensor in fp32 (fp64 when
    the tensors are fp64, so float64 checks of the formulas stay exact)."""
    dtype = accumulation_dtype(tensors[0])
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors, 2, dtype=dtype)))


def global_dot(xs: list[Tensor], ys: list[Tensor]) -> Tensor:
    """The inner product ``⟨x, y⟩`` over all tensors seen as one vector, as a device tensor."""
    dtype = accumulation_dtype(xs[0])
    return torch.stack([torch.tensordot(x, y, dims=x.dim()).to(dtype) for x, y in zip(xs, ys)]).sum()


def noise_in_gradients(params: list[Tensor], draw: Callable[[Tensor], Tensor]) -> list[Tensor]:
    """Fresh noise per parameter, ``draw(out)`` filling ``out`` in place (``Tensor.normal_``): into each
    parameter's ``.grad``, free between a method's passes (the next pass overwrites it), or into a new
    tensor like the parameter where there is none yet. Either way the values ``draw`` gives a tensor of
    the parameter's shape and layout, so nothing parameter-sized is allocated once gradients exist."""
    return [draw(torch.empty_like(p) if p.grad is None else p.grad) for p in params]


@dataclass
class ActiveGroup:
    """One param group's options (hyperparameters) and the parameters that take part in a step."""

    options: dict[str, Any]
    params: list[Tensor]

    @property
    def grads(self) -> list[Tensor]:
        """The parameters' current gradients (each pass replaces them, so read them afresh)."""
        return [p.grad for p in self.params]


class ActiveParams(list[ActiveGroup]):
    """The parameters one step works on, per param group, with flat views over all groups."""

    @property
    def params(self) -> list[Tensor]:
        return [p for entry in self for p in entry.params]

    @property
    def grads(self) -> list[Tensor]:
        return [g for entry in self for g in entry.grads]

    def split(self, tensors: list[Tensor]) -> list[list[Tensor]]:
        """``tensors``, one per parameter of :attr:`params` (a saved θ), cut into one list per group."""
        result, start = [], 0
        for entry in self:
            result.append(tensors[start:start + len(entry.params)])
            start += len(entry.params)
        return result

    @property
    def perturbed(self) -> ActiveParams:
        """The groups a method may move before a pass: all but those with ``perturb=False``
        (SAM-ON's groups; ``docs/optimizers.md``, "The param-group option perturb")."""
        return ActiveParams(entry for entry in self if entry.options.get("perturb", True))


def require_closure(optimizer: Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """A step pre-hook: a multi-pass method stepped without a closure (a bare ``optimizer.step()``, a
    host loop that steps after its own backward, such as the transformers ``Trainer``) or through
    Lightning's optimizer step is a ``TypeError`` naming the adapter to use, before anything moves
    (without a closure it was ``'NoneType' object is not callable`` from inside the first pass)."""
    closure = args[1] if len(args) > 1 else kwargs.get("closure")      # args[0] is the optimizer
    name = type(optimizer).__name__
    if not callable(closure):
        raise TypeError(f"{name}.step needs a closure that recomputes the mini-batch's loss and gradient (the "
                        "step runs its forward and backward passes itself): call optimizer.step(closure), or "
                        "let flatmin.step.Stepper drive it (in a transformers Trainer: "
                        "flatmin.integrations.hf.FlatminTrainer; in Lightning: "
                        "flatmin.integrations.lightning.FlatminMixin).")
    if is_lightning_closure(closure):
        raise TypeError(f"{name} was stepped through Lightning's optimizer step, which runs its hooks and "
                        "gradient clipping after every pass, unscales fp16 gradients once and drops the extended "
                        "closure: give the LightningModule flatmin.integrations.lightning.FlatminMixin.")


def is_lightning_closure(closure: Callable[..., Any]) -> bool:
    """Whether ``closure`` is the one Lightning's precision plugins pass (``partial(_wrap_closure, …)``,
    ``lightning/pytorch/plugins/precision/precision.py``), under either package name."""
    wrapped = getattr(closure, "func", None)
    return getattr(wrapped, "__module__", "").split(".")[0] in ("lightning", "pytorch_lightning")


class MultiPassOptimizer(Optimizer):
    """Base class of the flat-minima methods: wraps a base optimizer on shared param groups.

    ``base_optimizer`` is an optimizer class (built here on ``params`` with the keyword arguments
    that are not the method's) or an instance, whose param groups are adopted (``params`` is then
    ignored and may be None). A method declares its hyperparameters once, in ``hyperparameters``
    (:class:`~flatmin.optim.hyper.Hyper`): this constructor takes them as keyword arguments,
    checks them, keeps the structural ones as attributes and puts the others in every param group
    (shared with the base optimizer, so a scheduler attached to either can change ``lr`` or
    ``rho`` per group). A subclass given a ``key`` (``class GSAM(MultiPassOptimizer, key="gsam")``)
    is registered under it for ``optimizer.method``.

    ``base_step_gate``, when set (the trainer sets it), is called after ``G`` is in ``.grad`` and
    θ is restored; it may edit the gradients (averaging micro-batches, clipping) and returns
    False to skip the base step (fp16 overflow, an unfinished gradient accumulation).
    """

    #: The method's hyperparameters, by keyword (see :class:`~flatmin.optim.hyper.Hyper`).
    hyperparameters: ClassVar[dict[str, Hyper]] = {}
    #: What it needs of the rest of its optimizer config (the base optimizer, the shared settings),
    #: checked from the config before anything is built (MSAM: a base with a first moment).
    requirements: ClassVar[tuple[Requirement, ...]] = ()
    #: What it needs of a micro-batch's rows (bSAM: divisible by batch_split), checked with the batch size.
    batch_requirements: ClassVar[tuple[BatchRequirement, ...]] = ()
    #: Its row of the README's method table.
    card: ClassVar[Card]
    #: Forward+backward passes one ``step`` performs; subclasses set it. A method whose count varies
    #: from step to step (LookSAM) makes it a property: the passes of its *next* step.
    passes_per_step: int = 1
    #: True for a method that is a whole optimizer (bSAM): it makes its own update from its declared
    #: hyperparameters, so ``build_optimizer`` gives it the param groups instead of a base optimizer.
    full_optimizer: ClassVar[bool] = False
    #: Keys of ``state`` that a replica builds from its own gradients or draws under DDP (VaSSO's ``d``,
    #: ESAM's mask): they differ between replicas, so the trainer checkpoints every replica's
    #: (:func:`replica_state_dict`).
    replica_state: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def setting(cls, settings: Mapping[str, Any], name: str) -> Any:
        """Hyperparameter ``name`` as a config's ``settings`` give it, else its declared default."""
        return settings.get(name, cls.hyperparameters[name].default)

    @property
    def mean_passes_per_step(self) -> int | Fraction:
        """The passes per step on average over a run, exact (a ``Fraction`` where not whole): what a
        pass budget divides by. ``passes_per_step`` unless that varies (LookSAM: ``1 + 1/k``)."""
        return self.passes_per_step

    def __init_subclass__(cls, key: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if key is not None:
            if key in METHODS and METHODS[key] is not cls:
                raise ValueError(f"two methods registered as {key!r}: {METHODS[key].__name__} and {cls.__name__}")
            cls.key = key
            METHODS[key] = cls
        if "__init__" not in cls.__dict__:
            cls.__signature__ = _signature(cls.hyperparameters)

    def __init__(self, params: Any, base_optimizer: type[Optimizer] | Optimizer, **kwargs: Any) -> None:
        group_options = {}
        for name, hyper in self.hyperparameters.items():
            if hyper.grouping:
                continue
            value = kwargs.pop(name, hyper.default)
            if not hyper.check(value):
                raise ValueError(f"{type(self).__name__}: {name} must be {hyper.check.requirement} (got {value!r})")
            if hyper.structural:
                setattr(self, name, value)
            else:
                group_options[name] = value
        if isinstance(base_optimizer, Optimizer):
            if kwargs:
                raise TypeError(f"{type(self).__name__} got keyword arguments that are not its hyperparameters "
                                f"({', '.join(kwargs)}): base-optimizer arguments need a base optimizer class, "
                                "not an instance")
            super().__init__(base_optimizer.param_groups, group_options)
            self.base_optimizer = base_optimizer
        else:
            super().__init__(params, group_options)
            self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self.base_step_gate: Callable[[], bool] | None = None
        self._scratch: dict[tuple[str, int], Tensor] = {}
        self.register_step_pre_hook(require_closure)

    # -- the steps of an algorithm box -------------------------------------------------------
    @staticmethod
    def take_pass(closure: Closure, **protocol: Any) -> Tensor:
        """One forward+backward of the mini-batch at the current parameters (gradients enabled);
        ``protocol``: the extended closure's keywords (a subset of rows, forward only, per example)."""
        with torch.enable_grad():
            return closure(**protocol)

    def require_extended_closure(self, closure: Closure) -> int:
        """The closure's ``batch_size``, or a ``TypeError`` naming what it lacks of the extended
        protocol, raised before any pass (``docs/optimizers.md``, "The extended closure")."""
        lacks = extended_closure_lacks(closure)
        if lacks:
            raise TypeError(f"{type(self).__name__} needs a closure of the extended protocol, closure(indices=None, "
                            "backward=True, per_example=False) with an int attribute batch_size; this one lacks "
                            f"{', '.join(lacks)}")
        return closure.batch_size

    def active(self, with_grad: bool = True) -> ActiveParams:
        """Per param group, the parameters that have a gradient (the others are never touched);
        with ``with_grad=False``, before any pass, every parameter that requires one."""
        result = ActiveParams()
        for group in self.param_groups:
            params = [p for p in group["params"] if (p.grad is not None if with_grad else p.requires_grad)]
            if params:
                result.append(ActiveGroup(group, params))
        return result

    def buffers(self, name: str, params: list[Tensor]) -> list[Tensor]:
        """Parameter-sized scratch tensors named ``name``, one per parameter of ``params``
        (allocated once, reused every step).

        Scratch is not optimizer state: it is not checkpointed, because every step rewrites it.
        """
        result = []
        for param in params:
            key = (name, id(param))
            buffer = self._scratch.get(key)
            if buffer is None:
                buffer = self._scratch[key] = torch.empty_like(param)
            result.append(buffer)
        return result

    def state_tensors(self, name: str, params: list[Tensor]) -> list[Tensor]:
        """The method's state tensors ``name`` of ``params``, one per parameter, zeros created on first
        use. Unlike scratch, state is checkpointed (``state_dict``) and carries over from step to step."""
        for param in params:
            if name not in self.state[param]:
                self.state[param][name] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return [self.state[param][name] for param in params]

    def save(self, name: str, params: list[Tensor], tensors: list[Tensor]) -> list[Tensor]:
        """Copy ``tensors`` (one per parameter: the parameters themselves, or their gradients) into
        the scratch buffers ``name`` of ``params`` and return those buffers."""
        saved = self.buffers(name, params)
        if saved:
            torch._foreach_copy_(saved, tensors)
        return saved

    @staticmethod
    def restore(params: list[Tensor], saved: list[Tensor]) -> None:
        """Copy the saved θ back into the parameters, bit for bit."""
        if params:
            torch._foreach_copy_(params, saved)

    @staticmethod
    def ascend(active: ActiveParams, radius: str, scales: list[list[Tensor] | None] | None = None,
               normalize: bool = True, theta: list[list[Tensor] | None] | None = None) -> None:
        """Move θ along the current gradients g: ``θ ← θ + r · S²⊙g / (‖S⊙g‖ + ξ)``.

        ``r`` is each group's option ``radius`` (``rho``, ``rho_p``); ``S`` (one list of tensors per
        group, None where S = 1) is ASAM's ``|θ|+eta`` or TRACER's ``sqrt(D)``; without it this is
        SAM's ``rho · g/‖g‖``. ``normalize=False`` drops the norm (USAM: ``θ ← θ + r·S²⊙g``).
        Only the groups that may be perturbed move, and the norm is theirs. The step is built in
        place in the gradient tensors, which the next pass overwrites; except where a group's scale
        *is* its parameter list (ASAM's T, built in the parameters' own storage by
        :meth:`ascend_in_ball`): there ``θ + e`` is built in the parameters, as ``T⊙(T⊙g)·c + θ``
        from ``theta`` (that group's saved θ, per group), and the gradients are left holding ``T⊙g``.
        Either way the same float operations in the same order, so the same bits.
        """
        groups = len(active)
        triples = [(entry, scale, saved) for entry, scale, saved in zip(active, scales or [None] * groups,
                                                                         theta or [None] * groups)
                   if entry.options.get("perturb", True)]
        if not triples:
            return
        for entry, scale, _ in triples:                      # g ← S⊙g
            if scale is not None:
                torch._foreach_mul_(entry.grads, scale)
        norm = global_norm([g for entry, _, _ in triples for g in entry.grads]) if normalize else None
        for entry, scale, saved in triples:                  # g ← r·S²⊙g/‖S⊙g‖, θ ← θ + g
            grads, params = entry.grads, entry.params
            factor = entry.options[radius] / (norm + NORM_EPS) if normalize else entry.options[radius]
            if scale is params:                              # T in the parameters: θ + e = T⊙(T⊙g)·c + θ
                torch._foreach_mul_(params, grads)
                torch._foreach_mul_(params, factor)
                torch._foreach_add_(params, saved)
                continue
            if scale is not None:
                torch._foreach_mul_(grads, scale)
            torch._foreach_mul_(grads, factor)
            torch._foreach_add_(params, grads)

    def ascend_in_ball(self, moved: ActiveParams, theta: list[Tensor], radius: str = "rho",
                       normalize: bool = True) -> None:
        """:meth:`ascend` in ASAM's ball when the method's ``adaptive`` is on (``T = |θ| + eta`` on
        the tensors of adaptive groups), else in the plain ball. ``theta``: the saved θ of
        ``moved.params`` (the caller restores θ from it after the pass). T allocates nothing: it is
        built in the parameters' own storage (``|θ|`` then ``+ eta``, in place), and θ + e is formed
        there from ``theta``."""
        if not getattr(self, "adaptive", False):
            self.ascend(moved, radius, None, normalize)
            return
        scales: list[list[Tensor] | None] = []
        for entry in moved:
            params = entry.params
            if entry.options.get("adaptive", True) and entry.options.get("perturb", True):
                torch._foreach_abs_(params)                  # T = |θ| + eta, in θ's storage
                torch._foreach_add_(params, entry.options["eta"])
                scales.append(params)
            else:
                scales.append(None)
        self.ascend(moved, radius, scales, normalize, moved.split(theta))

    def gate_tensors(self) -> list[Tensor]:
        """Tensors besides ``.grad`` that belong to this step's ``G`` (bSAM's ``gs``): the trainer's
        gate averages them with the gradients, over the micro-batches of an accumulation and across
        replicas, before the base step (it clips only the gradients). Valid while ``base_step_gate``
        runs; none by default."""
        return []

    def base_step(self) -> bool:
        """The base optimizer's ordinary step with ``G`` in ``.grad``, unless the gate says skip.

        Returns whether it ran, so that what a method does after the base step (WSAM's decoupled
        update, LookSAM's state) follows only taken steps (``docs/optimizers.md``, "The base-step
        gate")."""
        ran = self.base_step_gate is None or bool(self.base_step_gate())
        if ran:
            self.base_optimizer.step()
        return ran

    # -- what is evaluated ---------------------------------------------------------------------
    #: What :meth:`evaluation_weights` puts in the model, in words ("the slow weights"), when it is
    #: not the training weights themselves; None for a method that evaluates its training weights.
    evaluated: ClassVar[str | None] = None

    @contextlib.contextmanager
    def evaluation_weights(self) -> Iterator[None]:
        """Inside, the parameters are the weights to evaluate and to save as the model (Lookahead's
        slow weights, an average); on exit the training weights are back, bit for bit, even after an
        exception (``docs/optimizers.md``, "Evaluation weights"). The training weights themselves
        for every method that does not say otherwise."""
        yield

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The method's own state (``self.state``) and the base optimizer's, together."""
        return {"method": super().state_dict(), "base": self.base_optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict["method"])
        self.base_optimizer.load_state_dict(state_dict["base"])
        self.param_groups = self.base_optimizer.param_groups


def optimizer_stack(optimizer: Optimizer) -> list[MultiPassOptimizer]:
    """``optimizer`` and the flatmin optimizers it wraps (Lookahead's, an average's), outermost first."""
    stack = []
    while isinstance(optimizer, MultiPassOptimizer):
        stack.append(optimizer)
        optimizer = optimizer.base_optimizer
    return stack


def replica_state_dict(optimizer: Optimizer) -> list[dict[int, dict[str, Tensor]]] | None:
    """This replica's own part of the optimizer's state (``replica_state``), per optimizer of the
    stack, by parameter index, on the CPU; None where no optimizer of the stack has such state."""
    stack = optimizer_stack(optimizer)
    if not any(level.replica_state for level in stack):
        return None
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return [{index: {key: level.state[p][key].detach().cpu() for key in level.replica_state if key in level.state[p]}
             for index, p in enumerate(params) if p in level.state}
            for level in stack]


def load_replica_state_dict(optimizer: Optimizer, entries: list[dict[int, dict[str, Tensor]]]) -> None:
    """Put a replica's own state (:func:`replica_state_dict`) back, over what ``load_state_dict`` set."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for level, entry in zip(optimizer_stack(optimizer), entries):
        for index, values in entry.items():
            param = params[index]
            for key, value in values.items():
                level.state[param][key] = value.to(param.device).clone()


def _signature(hyperparameters: dict[str, Hyper]) -> inspect.Signature:
    """``(params, base_optimizer, *, <hyperparameter>=<default>, …, **base_kwargs)``, for help()."""
    kind = inspect.Parameter
    return inspect.Signature([kind("params", kind.POSITIONAL_OR_KEYWORD),
                              kind("base_optimizer", kind.POSITIONAL_OR_KEYWORD),
                              *(kind(name, kind.KEYWORD_ONLY, default=hyper.default)
                                for name, hyper in hyperparameters.items() if not hyper.grouping),
                              kind("base_kwargs", kind.VAR_KEYWORD)])
