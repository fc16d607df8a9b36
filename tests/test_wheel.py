"""The wheel works without the clone (issue 23): built from this checkout, installed into a fresh
virtual environment, and used from a folder outside the repository through its commands and its
library API. The environment sees this Python's packages for flatmin's dependencies (installing
torch again is minutes and gigabytes), but flatmin itself comes from the wheel: a read of the
source tree would fail there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

BUILD_EVERY_OPTION = """
import torch
import flatmin
import flatmin.integrations.accelerate, flatmin.integrations.hf, flatmin.integrations.lightning  # the adapters ship
from flatmin.optim import build_optimizer, option_names
from flatmin.runtime import Runtime
from flatmin.step import Stepper
assert "site-packages" in flatmin.__file__, flatmin.__file__
names = option_names()
for name in names:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    stepper = Stepper(model, build_optimizer(name, model, lr=0.05), Runtime.local("cpu", "fp32"))
    before = [p.detach().clone() for p in model.parameters()]
    stepper.step(torch.randn(16, 4), torch.randint(0, 3, (16,)))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), name
print(len(names))
"""

def test_the_wheel_trains_reports_measures_and_reads_a_user_config_folder(tmp_path: Path):
    source, wheels = tmp_path / "source", tmp_path / "wheels"      # a copy: building writes build/ beside the code
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(source)], check=True, capture_output=True)
    (wheel,) = wheels.glob("flatmin-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python, bin_dir = env_dir / "bin" / "python", env_dir / "bin"
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "--quiet", str(wheel)], check=True)
    work = tmp_path / "elsewhere"
    (work / "my_conf" / "optimizer").mkdir(parents=True)
    (work / "my_conf" / "optimizer" / "my_sam.yaml").write_text(
        "defaults:\n  - /optimizer/sam@_here_\n  - _self_\nname: my_sam\nrho: 0.1\n")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FLATMIN_LOG_DIR": str(work / "out"),
           "WANDB_SILENT": "true"}
    env.pop("PYTHONPATH", None)

    def run(*command: str) -> subprocess.CompletedProcess:
        result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{command}: {result.stderr[-2000:]}"
        return result

    run("flatmin-train", "hydra.run.dir=out/quick", "trainer.progress_bar=false")
    summary = json.loads((work / "out" / "quick" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["test"]["best_val"]["test/accuracy"] >= 0.90
    assert int(run(str(python), "-c", BUILD_EVERY_OPTION).stdout) >= 25
    assert "sgd · digits · small_cnn" in run("flatmin-report", "out/quick").stdout
    run("flatmin-sharpness", "out/quick", "--json", "sharpness.json", "--max-iter", "5", "--samples", "64")
    assert "trace" in json.loads((work / "sharpness.json").read_text())
    run("flatmin-train", "--config-dir", "my_conf", "optimizer=my_sam", "trainer.epochs=1", "hydra.run.dir=out/mine")
    optimizer = OmegaConf.load(work / "out" / "mine" / "config.yaml").optimizer
    assert (optimizer.name, optimizer.method, optimizer.rho) == ("my_sam", "sam", 0.1)
