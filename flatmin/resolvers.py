"""The OmegaConf resolvers flatmin's configs use, registered when ``flatmin`` is imported."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


def pick(key: str, table: dict[str, Any], default: Any = None) -> Any:
    """``${pick:${dataset.name},{flowers102: 16},32}``: the value of ``key`` in ``table``, else ``default``.

    For protocols whose settings depend on another choice (NSO's batch 16 on Flowers, GAM's released
    hyperparameters per dataset), written where the protocol is, in its experiment's config."""
    return table.get(key, default)


if not OmegaConf.has_resolver("pick"):
    OmegaConf.register_new_resolver("pick", pick)
