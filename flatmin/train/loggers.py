"""Metric logging: ``metrics.jsonl`` in the run directory always, Weights & Biases when asked.

Every logger has ``log(record)`` (a flat dict with ``step`` and ``epoch``), ``summary(dict)`` and
``close(failed)``. W&B runs in offline mode unless the config says otherwise, logs the resolved
config, and is finished inside the job so a Hydra multirun yields one W&B run per job, grouped by
the sweep.
"""

from __future__ import annotations

import json
import netrc
import os
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from omegaconf import DictConfig

from flatmin.network import reachable
from flatmin.rundir import flatten, json_line


class Logger(Protocol):
    def log(self, record: dict[str, Any]) -> None: ...

    def summary(self, summary: dict[str, Any]) -> None: ...

    def close(self, failed: bool = False) -> None: ...


class JsonlLogger:
    """Appends one strict JSON line per record to ``metrics.jsonl``.

    A resumed run keeps the file's lines up to its checkpoint's optimizer step (``until_step``), so
    lines logged after the checkpoint by the interrupted run do not appear twice; a new run (None)
    starts it empty.
    """

    def __init__(self, path: Path, until_step: int | None = None) -> None:
        history = []
        if until_step is not None and path.is_file():
            for line in path.read_text().splitlines():
                if line.strip() and json.loads(line)["step"] <= until_step:
                    history.append(line)
        self.file = open(path, "w")
        self.file.writelines(line + "\n" for line in history)
        self.file.flush()

    def log(self, record: dict[str, Any]) -> None:
        self.file.write(json_line(record) + "\n")
        self.file.flush()

    def summary(self, summary: dict[str, Any]) -> None:
        """The summary goes to ``summary.json``, written by the trainer; nothing to add here."""

    def close(self, failed: bool = False) -> None:
        self.file.close()


def wandb_online_problem(cfg: DictConfig) -> str | None:
    """Why an online W&B run could not start, as a sentence: no API key (in ``WANDB_API_KEY`` or
    the netrc file that ``wandb login`` writes), or a W&B server this machine cannot reach (wandb
    would retry for minutes, then fail with a traceback). None when it can, or is not online."""
    if cfg.mode != "online":
        return None
    offline = "log offline with logger.wandb.mode=offline and upload later with wandb sync."
    server = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
    if not (os.environ.get("WANDB_API_KEY") or _netrc_has(urlparse(server).hostname)):
        return f"logger.wandb.mode=online needs a W&B login (wandb login, or WANDB_API_KEY); {offline}"
    if not reachable(server):
        return f"logger.wandb.mode=online cannot reach the W&B server {server} from this machine; {offline}"
    return None


def _netrc_has(host: str | None) -> bool:
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbLogger:
    """One W&B run per job (``with``-style: always finished in :meth:`close`)."""

    def __init__(self, cfg: DictConfig, config: dict[str, Any], run_dir: Path, name: str,
                 group: str | None, run_id: str | None) -> None:
        import wandb

        self.run = wandb.init(project=cfg.project, entity=cfg.entity, mode=cfg.mode, dir=str(run_dir),
                              name=name, group=cfg.group or group, tags=list(cfg.tags), config=config,
                              id=run_id, resume="allow" if run_id else None)
        self.run_id = self.run.id

    def log(self, record: dict[str, Any]) -> None:
        self.run.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    def summary(self, summary: dict[str, Any]) -> None:
        self.run.summary.update(flatten(summary))

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class Loggers:
    """Fans records out to every active logger."""

    def __init__(self, loggers: list[Logger]) -> None:
        self.loggers = loggers

    @property
    def wandb_run_id(self) -> str | None:
        return next((lg.run_id for lg in self.loggers if isinstance(lg, WandbLogger)), None)

    def log(self, record: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.log(record)

    def summary(self, summary: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.summary(summary)

    def close(self, failed: bool = False) -> None:
        for logger in self.loggers:
            logger.close(failed)
