"""Checkpoints are written atomically and a bad one is reported in one sentence."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flatmin.errors import CheckpointError
from flatmin.train import run
from flatmin.rundir import load_checkpoint, save_checkpoint
from tests.conftest import ROOT, run_cli

KILLED_MID_WRITE = """
import os, sys, torch
from flatmin.rundir import save_checkpoint

def save_half_then_die(obj, file):
    file.write(b"PK\\x03\\x04 the first bytes of a zip archive, and then the process is killed")
    file.flush()
    os._exit(137)                      # SIGKILL-like: no exception handler or cleanup runs

torch.save = save_half_then_die
save_checkpoint({"epoch": 2, "weights": torch.ones(3)}, sys.argv[1])
"""


def test_a_crash_mid_write_leaves_the_previous_checkpoint_loadable(tmp_path: Path):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1, "weights": torch.zeros(3)}, path)
    result = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(path)], cwd=ROOT)
    assert result.returncode == 137
    assert (tmp_path / "last.pt.tmp").exists()                     # the half-written file
    state = load_checkpoint(path, required=("epoch", "weights"))
    assert state["epoch"] == 1 and torch.equal(state["weights"], torch.zeros(3))
    save_checkpoint({"epoch": 3, "weights": torch.ones(3)}, path)    # the next save still works
    assert load_checkpoint(path, required=("epoch",))["epoch"] == 3
    assert not (tmp_path / "last.pt.tmp").exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_checkpoint_is_one_clear_error(tmp_path: Path, damage: str):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1, "weights": torch.randn(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(b"not a checkpoint at all" if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cannot be read .*truncated or corrupt"):
        load_checkpoint(path, required=("epoch",))


def test_resuming_from_a_corrupt_checkpoint_exits_with_the_sentence(tmp_path: Path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"\x00" * 100)
    result = run_cli(f"trainer.resume={bad}", "trainer.epochs=1", log_dir=tmp_path / "logs", check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"flatmin: error: Checkpoint {bad} cannot be read (UnpicklingError): it is truncated or corrupt; "
        "resume from another checkpoint or start a new run."]


def test_a_checkpoint_of_another_model_is_refused_clearly(cfg_factory):
    first = cfg_factory("trainer.epochs=1")
    run(first)
    other = cfg_factory("trainer.epochs=2", "model.widths=[8,8,8]", f"trainer.resume={first.paths.output_dir}",
                        "trainer.resume_accept=[model.widths]")          # accepted, the weights still do not fit
    with pytest.raises(CheckpointError, match="does not fit this model and optimizer"):
        run(other)
