"""Progress of a long measurement: a tqdm bar on a terminal (as the trainer shows its epochs), log lines
otherwise (at most one per tenth of the work and per ``LOG_EVERY_S`` seconds). A measure is followed by
counting the calls it makes (Hessian-vector products, loss evaluations), so the measures themselves know
nothing of it."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from tqdm import tqdm

log = logging.getLogger(__name__)
LOG_EVERY_S = 10.0


class Progress:
    """``total`` units of one measure's work (at most ``total`` when it may stop early); a unit is
    ``every`` calls of the functions wrapped by :meth:`counting`. ``bar=False`` never shows a bar."""

    def __init__(self, description: str, total: int, unit: str, bar: bool = True, every: int = 1) -> None:
        self.description, self.total, self.unit, self.every = description, max(total, 1), unit, every
        self.calls = self.done = self.logged = 0
        self.logged_at = time.monotonic()
        self.bar = tqdm(total=self.total, desc=description, unit=f" {unit}", leave=False,
                        disable=None if bar else True)

    def counting(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function``, advancing the progress by one call each time it is called."""

        def counted(*args: Any, **kwargs: Any) -> Any:
            result = function(*args, **kwargs)
            self.calls += 1
            if self.calls % self.every == 0:
                self._advance()
            return result

        return counted

    def _advance(self) -> None:
        self.done += 1
        self.bar.update(1)
        tenths = 10 * self.done // self.total
        if self.bar.disable and tenths > self.logged and time.monotonic() - self.logged_at >= LOG_EVERY_S:
            self.logged, self.logged_at = tenths, time.monotonic()
            log.info("%s: %d/%d %s", self.description, self.done, self.total, self.unit)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exception: Any) -> None:
        self.close()
