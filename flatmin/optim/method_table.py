"""The README's method table, from the methods' declarations and the config options that use them
(``python -m flatmin.optim`` prints it; a test compares it with the README)."""

from __future__ import annotations

from flatmin.optim.averaging import WeightAveraging
from flatmin.optim.lookahead import Lookahead
from flatmin.optim.multipass import METHODS
from flatmin.optim.registry import options, proximal_lookahead


def method_table() -> str:
    """The README's method table: the base optimizers, each registered method (with the options
    that use it) and the wrappers (Lookahead, weight averaging), from their declarations."""
    using: dict[str, list[str]] = {}
    for option, own in options().items():
        using.setdefault("lookahead" if proximal_lookahead(own) else own.get("method") or "", []).append(option)
    rows = ["| method | `optimizer=` | passes per step | extra buffers | source |", "|---|---|---|---|---|",
            f"| SGD, Adam, AdamW (or any timm optimizer as `optimizer.base`) | "
            f"{', '.join(f'`{o}`' for o in using.get('', []))} | 1 | 0 | — |"]
    for key, cls in sorted(METHODS.items(), key=lambda item: item[1].card.title):
        card = cls.card
        names = ", ".join(f"`{o}`" for o in using.get(key, [])) or f"(`method: {key}`)"
        rows.append(f"| {card.title} | {names} | {card.passes} | {card.buffers} | {card.source} |")
    card = Lookahead.card
    proximal = "".join(f", `{option}`" for option in using.get("lookahead", []))
    rows.append(f"| {card.title} | `optimizer.lookahead.enabled=true` over any of them{proximal} | {card.passes} | "
                f"{card.buffers} | {card.source} |")
    card = WeightAveraging.card
    rows.append(f"| {card.title} | `optimizer.averaging.kind=ema` or `=swa` over any of them (outermost) | "
                f"{card.passes} | {card.buffers} | {card.source} |")
    return "\n".join(rows)
