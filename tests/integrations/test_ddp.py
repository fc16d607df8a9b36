"""Two gloo replicas under ``torchrun``: Lightning's DDP strategy through ``FlatminMixin`` and the
transformers Trainer's DDP through ``FlatminTrainer`` each leave, on every replica, what flatmin's
``Stepper`` leaves on a DDP-wrapped network fed the same micro-batches (``ddp_worker.py``): every pass
local, one average of G; and each counts optimizer steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integrations.ddp_worker import METHODS


def test_two_gloo_replicas_of_each_host_step_as_the_stepper_does_under_ddp(tmp_path: Path):
    root = Path(__file__).parents[2]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(Path(__file__).with_name("ddp_worker.py")), str(tmp_path)],
                          env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for case in METHODS:
            lightning, transformers = results["lightning"][case], results["transformers"][case]
            assert lightning["difference"] <= 1e-12 and transformers["difference"] <= 1e-12, (rank, case, results)
            assert lightning["steps"] == 4                    # 7 batches in groups of 2: optimizer steps
            assert transformers["steps"] == transformers["expected_steps"] == 2   # 4 of the 7 batches per replica
