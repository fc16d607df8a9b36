"""Pretrained files (weights, tokenizers) from a local path or the Hugging Face hub, with one-sentence errors.

timm and transformers fetch from the hub by name and read local files or folders by path. Offline,
or with a path that does not exist, they raise an ``OSError`` from deep inside; :func:`load_pretrained`
turns that into a :class:`~flatmin.errors.ModelNotFoundError` naming the config option to set.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from flatmin.errors import ModelNotFoundError

T = TypeVar("T")


def load_pretrained(load: Callable[[], T], what: str, source: str, option: str) -> T:
    """Run ``load()``; if ``source`` is neither on disk nor downloadable, say so in one sentence.

    ``what`` names the thing ("timm model resnet34's weights"), ``source`` is the hub name or path
    that was asked for and ``option`` the config key that chooses it.
    """
    try:
        return load()
    except OSError as error:
        raise ModelNotFoundError(
            f"{what} could not be loaded from {source!r}, which is neither a local path that exists nor reachable "
            f"on the Hugging Face hub ({type(error).__name__}): download it on a machine with network "
            f"and set {option}=<its local path>.") from error
