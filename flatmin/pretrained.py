"""Pretrained files (weights, tokenizers) from a local path or the Hugging Face hub, with one-sentence errors.

timm and transformers fetch from the hub by name and read local files or folders by path. Offline,
or with a path that does not exist, they raise an ``OSError`` from deep inside; :func:`load_pretrained`
turns that into a :class:`~flatmin.errors.ModelNotFoundError` naming the config option to set.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, TypeVar

from flatmin.errors import ModelNotFoundError
from flatmin.network import reachable

T = TypeVar("T")
log = logging.getLogger(__name__)


def hub_reachable() -> bool:
    """Whether the Hugging Face hub (``HF_ENDPOINT``, else huggingface.co) accepts a connection."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    return reachable(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")


def offline_unless_reachable() -> None:
    """Put huggingface_hub (and so transformers, timm) and ``datasets`` in offline mode when the hub
    cannot be reached, so that a lookup fails at once instead of retrying for tens of seconds."""
    if hub_reachable():
        return
    import datasets.config
    import huggingface_hub.constants

    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
    log.info("the Hugging Face hub cannot be reached: only local files and the cache are used")


def load_pretrained(load: Callable[[], T], what: str, source: str, option: str) -> T:
    """Run ``load()``; if ``source`` is neither on disk nor downloadable, say so in one sentence.

    ``what`` names the thing ("timm model resnet34's weights"), ``source`` is the hub name or path
    that was asked for and ``option`` the config key that chooses it.
    """
    offline_unless_reachable()
    try:
        return load()
    except OSError as error:
        raise ModelNotFoundError(
            f"{what} could not be loaded from {source!r}, which is neither a local path that exists nor reachable "
            f"on the Hugging Face hub ({type(error).__name__}): download it on a machine with network "
            f"(hf download <repository> --local-dir <folder>) and set {option} to that local copy.") from error
