"""The sharpness measurement protocol: which parameters, which examples, which mode, which options.

As released with NSO (Li, Ju & Zhang, arXiv 2306.08553, ``compute_hessian_traces.py``): the model
in eval mode (BatchNorm uses its running statistics, dropout is off), fp32 (no autocast, no
TF32), the plain cross-entropy on training batches of a fixed subset of the training split
(``samples`` examples picked with ``seed``), Hutchinson's trace and the power-iteration λ_max of
each mini-batch's Hessian, averaged over the mini-batches (``aggregate="batch_mean"``).
``aggregate="subset"`` measures the Hessian of the mean loss over the whole subset instead
(PyHessian's full-dataset mode, Yao et al., 2020); the traces agree in expectation, the
eigenvalues do not (the mean of per-batch λ_max is at least the λ_max of the mean Hessian).

Optionally (``m_rho > 0``), adaptive m-sharpness (``m_sharpness.py``; the README's "Sharpness":
n = 1024, m = 128) over the same parameters, also in eval mode and fp32.

Nothing is changed by a measurement: parameters, ``.grad``, BatchNorm statistics, module modes
and the global random generators are as they were before.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.modules.conv import _ConvNd
from torch.utils.data import DataLoader, Dataset, Subset

from flatmin.errors import ConfigError
from flatmin.sharpness.hessian import (LossFn, batch_hessian, hutchinson_trace, subset_hessian, to_device,
                                       top_eigenvalues)
from flatmin.sharpness.m_sharpness import m_sharpness
from flatmin.sharpness.progress import Progress


@dataclass(frozen=True)
class SharpnessOptions:
    """What to measure and how; the defaults are the NSO release's. In a run config these are
    ``trainer.sharpness_<field>``."""

    samples: int = 1000            # training examples in the fixed subset
    batch_size: int = 64           # mini-batch size of the Hessian-vector products
    top_k: int = 1                 # eigenvalues to find
    max_iter: int = 100            # Hutchinson vectors, and power iterations per eigenvalue
    tol: float = 1e-3              # relative change that stops either iteration
    params: str = "all"            # all | conv_and_head | a regular expression on parameter names
    aggregate: str = "batch_mean"  # batch_mean (NSO release) | subset (PyHessian full-dataset mode)
    seed: int = 0                  # picks the subset and the random vectors
    m_rho: float = 0.0             # radius of (adaptive) m-sharpness; 0: not measured
    m: int = 128                   # examples per m-sharpness batch
    m_samples: int = 1024          # examples in m-sharpness's fixed subset (n)
    m_steps: int = 20              # gradient-ascent steps per batch
    m_norm: str = "adaptive"       # adaptive (the ball ‖δ / |w|‖ ≤ rho) | l2 (‖δ‖ ≤ rho)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> SharpnessOptions:
        """The options of a run config. A missing key (a run made before these options existed)
        takes the default; a null batch size is the run's training batch size."""
        values = config_values(cls, cfg)
        values["batch_size"] = values["batch_size"] or cfg.dataset.batch_size
        return cls(**values)


def config_values(options: type, cfg: DictConfig) -> dict[str, Any]:
    """``trainer.sharpness_<field>`` for each field of the dataclass ``options``, its default where the
    run's config has no such key (a run made before the option existed)."""
    return {f.name: cfg.trainer.get(f"sharpness_{f.name}", f.default) for f in fields(options)}


def select_parameters(model: nn.Module, params: str = "all") -> list[tuple[str, nn.Parameter]]:
    """The trainable parameters the Hessian is taken over, with their names.

    ``all``: every parameter with ``requires_grad``. ``conv_and_head``: the weights (not the
    biases) of every convolution and of the last ``nn.Linear``, the NSO release's choice (its name
    filter also skips convolutions without "conv" in their name, such as ResNet shortcuts: a
    regular expression reproduces that exactly). Anything else is a regular expression searched
    in the parameter names. An empty selection is a ``ConfigError``.
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if params == "all":
        selected = named
    elif params == "conv_and_head":
        linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
        chosen = {id(module.weight) for module in model.modules() if isinstance(module, _ConvNd)}
        chosen.update(id(linear.weight) for linear in linears[-1:])
        selected = [(name, p) for name, p in named if id(p) in chosen]
    else:
        selected = [(name, p) for name, p in named if re.search(params, name)]
    if not selected:
        raise ConfigError(f"trainer.sharpness_params={params!r} selects no trainable parameter of "
                          f"{type(model).__name__}; use all, conv_and_head or a pattern that matches some of "
                          "its parameter names.")
    return selected


def fixed_subset_batches(dataset: Dataset, samples: int, batch_size: int, seed: int,
                         collate_fn: Callable[[list], Any] | None = None) -> list[tuple[Any, Tensor]]:
    """``samples`` examples of ``dataset`` picked by ``seed`` (all of them if it is smaller), in
    mini-batches on the CPU, put together by ``collate_fn`` (e.g. padding tokenised text; None: the
    default). Random transforms, if the dataset has any, draw from torch's generator seeded with
    ``seed`` as well, so the batches are the same every time; the global generator is left as it was."""
    count = min(samples, len(dataset))
    indices = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count].tolist()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return list(DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=0,
                               collate_fn=collate_fn))


@contextlib.contextmanager
def measurement_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode, gradients on, exact fp32 matmuls and convolutions (no TF32) and the math attention
    kernel (the fused kernels have no double backward); the previous modes are restored after."""
    modes = [(module, module.training) for module in model.modules()]
    precisions = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    model.eval()
    try:
        torch.backends.cuda.matmul.fp32_precision = torch.backends.cudnn.conv.fp32_precision = "ieee"
        with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = precisions
        for module, training in modes:
            module.train(training)


def measure_sharpness(model: nn.Module, dataset: Dataset, options: SharpnessOptions, device: torch.device,
                      loss_fn: LossFn = F.cross_entropy, collate_fn: Callable[[list], Any] | None = None,
                      progress_bar: bool = False) -> dict[str, Any]:
    """Hessian trace and top eigenvalues of ``loss_fn`` (the task's unsmoothed training loss) on a
    fixed subset of ``dataset`` (the training split, batched by ``collate_fn``) under the protocol
    above; ``model`` must already be on ``device``. The Hessian-vector products are counted as
    :class:`~flatmin.sharpness.progress.Progress` (a bar on a terminal with ``progress_bar``).

    Returns a JSON-ready dict: ``trace``, ``eigenvalues`` (largest first), ``lambda_max``, the
    options, the subset actually used (``samples``, ``batches``), the number of parameters the
    Hessian is taken over and ``time_s``; with ``m_rho > 0`` also ``m_sharpness`` (over its own
    subset of ``m_samples`` examples in batches of ``m``, same parameters and seed).
    """
    started = time.perf_counter()
    params = [p for _, p in select_parameters(model, options.params)]
    batches = fixed_subset_batches(dataset, options.samples, options.batch_size, options.seed, collate_fn)
    samples = sum(len(targets) for _, targets in batches)
    generator = torch.Generator(device=device).manual_seed(options.seed)
    estimate = {"max_iter": options.max_iter, "tol": options.tol, "generator": generator}
    products = options.max_iter * (1 + options.top_k) * (1 if options.aggregate == "subset" else len(batches))
    with measurement_mode(model), Progress("hessian", products, "Hessian-vector products (at most)",
                                           progress_bar) as progress:
        if options.aggregate == "subset":
            hvp = progress.counting(subset_hessian(model, loss_fn, batches, params, device))
            trace = hutchinson_trace(hvp, params, **estimate)
            eigenvalues = top_eigenvalues(hvp, params, options.top_k, **estimate)
        else:  # batch_mean: each batch's estimates, weighted by its size
            trace, eigenvalues = 0.0, [0.0] * options.top_k
            for inputs, targets in batches:
                weight = len(targets) / samples
                hvp = progress.counting(batch_hessian(model, loss_fn, to_device(inputs, device), targets.to(device),
                                                      params))
                trace += weight * hutchinson_trace(hvp, params, **estimate)
                batch_eigenvalues = top_eigenvalues(hvp, params, options.top_k, **estimate)
                eigenvalues = [total + weight * value for total, value in zip(eigenvalues, batch_eigenvalues)]
                del hvp  # frees this batch's gradient graph before the next one is built
    extra = {}
    if options.m_rho > 0:
        extra["m_sharpness"] = _m_sharpness_of(model, dataset, options, device, loss_fn, collate_fn, params,
                                                   generator, progress_bar)
    return {"trace": trace, "lambda_max": eigenvalues[0], "eigenvalues": eigenvalues, **extra, **asdict(options),
            "samples": samples, "batches": len(batches), "parameters": sum(p.numel() for p in params),
            "time_s": time.perf_counter() - started}


def _m_sharpness_of(model: nn.Module, dataset: Dataset, options: SharpnessOptions, device: torch.device,
                        loss_fn: LossFn, collate_fn: Callable[[list], Any] | None, params: list[Tensor],
                        generator: torch.Generator, progress_bar: bool = False) -> float:
    """Adaptive m-sharpness of ``params`` on its own fixed subset (``m_samples`` examples in batches
    of ``m``), under :func:`measurement_mode`, its loss evaluations counted as progress."""
    batches = fixed_subset_batches(dataset, options.m_samples, options.m, options.seed, collate_fn)
    with measurement_mode(model), Progress("m-sharpness", len(batches) * (options.m_steps + 2), "loss evaluations",
                                           progress_bar) as progress:
        return m_sharpness(model, progress.counting(loss_fn), batches, params, device, options.m_rho,
                           options.m_steps, options.m_norm, generator)
