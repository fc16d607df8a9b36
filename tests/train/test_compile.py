"""torch.compile with the multi-pass methods: one graph serves every pass, checkpoints stay clean."""

from __future__ import annotations

from pathlib import Path

import torch
from torch._dynamo.utils import counters

from flatmin.models import SmallCNN
from flatmin.optim import SAM
from flatmin.train import run
from flatmin.rundir import load_checkpoint
from tests.optim.common import stepper_for


def test_sam_steps_reuse_the_compiled_graph_without_recompiling():
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    module = SmallCNN(num_classes=10, in_channels=1)
    model = torch.compile(module, backend="aot_eager")
    optimizer = SAM(module.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    runner = stepper_for(model, optimizer)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    runner.step(x, y)
    graphs_after_first_step = counters["stats"]["unique_graphs"]
    for _ in range(4):
        runner.step(x, y)
    assert graphs_after_first_step >= 1
    assert counters["stats"]["unique_graphs"] == graphs_after_first_step
    assert runner.passes == 10


def test_a_compiled_run_trains_and_saves_plain_weights(cfg_factory):
    cfg = cfg_factory("optimizer=sam", "trainer.epochs=1", "trainer.compile=true", "trainer.compile_backend=aot_eager")
    summary = run(cfg)
    assert summary["status"] == "completed"
    state = load_checkpoint(Path(cfg.paths.output_dir) / "last.pt")
    assert all(not key.startswith("_orig_mod") for key in state["model"])
    assert state["model"].keys() == SmallCNN(num_classes=10, in_channels=1).state_dict().keys()
