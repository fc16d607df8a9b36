"""The OmegaConf resolvers flatmin's configs use, registered when ``flatmin`` is imported."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


def pick(key: str, table: dict[str, Any], default: Any = None) -> Any:
    """``${pick:${dataset.name},{flowers102: 16},32}``: the value of ``key`` in ``table``, else ``default``.

    For protocols whose settings depend on another choice (NSO's batch 16 on Flowers, GAM's released
    hyperparameters per dataset), written where the protocol is, in its experiment's config."""
    return table.get(key, default)


def reseed_phase(source: str | None) -> str:
    """``sweep=crowded_valley_reseed``'s phase: ``reseed`` (the best point of the tuning sweep in
    ``tuning.from``) or, without one, ``oneshot`` (the method's defaults)."""
    return "oneshot" if source is None else "reseed"


def reseed_first(source: str | None) -> int:
    """The first reseed: 1 after a tuning sweep (its seed is the tuning seed + 1), else 0."""
    return 0 if source is None else 1


def reseed_range(source: str | None, reseeds: int) -> str:
    """The reseed sweep's values of ``tuning.reseed``, as a Hydra sweep: ``range(1,R+1)`` after a
    tuning sweep (Crowded Valley's seeds 43-52 from 42), else ``range(0,R)`` (42-51)."""
    first = reseed_first(source)
    return f"range({first},{first + reseeds})"


RESOLVERS = {"pick": pick, "reseed_phase": reseed_phase, "reseed_first": reseed_first, "reseed_range": reseed_range}
for name, resolver in RESOLVERS.items():
    if not OmegaConf.has_resolver(name):
        OmegaConf.register_new_resolver(name, resolver)
