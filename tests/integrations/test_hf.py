"""``FlatminTrainer.train()`` leaves the parameters and BatchNorm buffers that flatmin's ``Stepper``
leaves on the same micro-batches with the same LR schedule, bit for bit in float64 (the real
transformers ``Trainer`` and accelerate, on the CPU); evaluation sees the evaluation weights, a
checkpoint resumes the Stepper, and what flatmin's step rules cannot hold under is refused."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from accelerate.utils import DistributedType
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments, get_scheduler
from transformers.modeling_outputs import SequenceClassifierOutput

from flatmin.integrations.accelerate import refuse_sharding
from flatmin.integrations.hf import STEPPER_NAME, FlatminTrainer
from flatmin.optim import build_optimizer
from flatmin.optim.multipass import evaluation_weights
from flatmin.runtime import Runtime
from flatmin.step import Stepper
from tests.integrations.test_accelerate import CASES as ACCELERATE_CASES

#: The accelerate adapter's cases (a single-pass optimizer among them) and USAM.
CASES = {**ACCELERATE_CASES, "usam": {}}
BATCH = 8
BATCHES = 7                 # with 2 micro-batches per step, the epoch's last group is 1
MAX_GRAD_NORM = 0.3         # below the gradients' norms: the clipping is active


class Classifier(nn.Module):
    """A transformers-style model: keyword tensors in, ``SequenceClassifierOutput`` out, its own
    loss when given labels (the plain Trainer's)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> SequenceClassifierOutput:
        logits = self.net(x)
        return SequenceClassifierOutput(loss=None if labels is None else F.cross_entropy(logits, labels), logits=logits)


class Rows(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        self.x, self.labels = x, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[index], "labels": self.labels[index]}


class Reseed(TrainerCallback):
    """The seed before every micro-batch, as the reference's loop sets it: a group's first comes
    after ``on_step_begin``, each other one after ``on_substep_end``."""

    def on_step_begin(self, *args, **kwargs):
        torch.manual_seed(7)

    def on_substep_end(self, *args, **kwargs):
        torch.manual_seed(7)


def model(dtype: torch.dtype = torch.float64) -> Classifier:
    torch.manual_seed(0)
    return Classifier().to(dtype)


def rows(count: int, dtype: torch.dtype = torch.float64, seed: int = 1) -> Rows:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(count, 6, generator=generator, dtype=dtype)
    return Rows(x, torch.randint(0, 3, (count,), generator=generator))


def optimizer(case: str, module: nn.Module) -> torch.optim.Optimizer:
    return build_optimizer(case.removeprefix("lookahead-"), module, lr=0.05, **CASES[case])


def state(module: nn.Module) -> list[torch.Tensor]:
    return [tensor.detach().clone() for tensor in (*module.parameters(), *module.buffers())]


def group_sizes(accumulate: int) -> list[int]:
    """The micro-batches of each optimizer step of the epoch: the last group takes what is left."""
    return [min(accumulate, BATCHES - start) for start in range(0, BATCHES, accumulate)]


def reference(case: str, accumulate: int, precision: str = "fp32", dtype: torch.dtype = torch.float64,
              after_step: Callable[[nn.Module, torch.optim.Optimizer], None] | None = None,
              ) -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The Stepper on the Trainer's micro-batches in order, with the Trainer's linear schedule stepped
    once per optimizer step; ``after_step(module, optimizer)`` after each."""
    module = model(dtype)
    method = optimizer(case, module)
    groups = group_sizes(accumulate)
    schedule = get_scheduler("linear", method, num_warmup_steps=0, num_training_steps=len(groups))
    stepper = Stepper(module, method, Runtime.local("cpu", precision), accumulate=accumulate,
                      grad_clip_norm=MAX_GRAD_NORM, forward=lambda net, inputs: net(**inputs).logits)
    data, start = rows(BATCH * BATCHES, dtype), 0
    for size in groups:
        for _ in range(size):
            torch.manual_seed(7)
            stepper.step({"x": data.x[start:start + BATCH]}, data.labels[start:start + BATCH], group_size=size)
            start += BATCH
        schedule.step()
        if after_step is not None:
            after_step(module, method)
    return module, method, schedule


def arguments(output_dir: Path, accumulate: int, **overrides) -> TrainingArguments:
    settings = {"per_device_train_batch_size": BATCH, "per_device_eval_batch_size": BATCH,
                "gradient_accumulation_steps": accumulate, "max_grad_norm": MAX_GRAD_NORM, "num_train_epochs": 1,
                "lr_scheduler_type": "linear", "train_sampling_strategy": "sequential", "dataloader_num_workers": 0,
                "report_to": [], "use_cpu": True, "save_strategy": "no", "seed": 0, "disable_tqdm": True,
                **overrides}
    return TrainingArguments(str(output_dir), **settings)


def hosted(case: str, output_dir: Path, accumulate: int, dtype: torch.dtype = torch.float64,
           trainer_class: type[FlatminTrainer] = FlatminTrainer, **overrides) -> FlatminTrainer:
    module = model(dtype)
    return trainer_class(model=module, args=arguments(output_dir, accumulate, **overrides),
                         train_dataset=rows(BATCH * BATCHES, dtype), eval_dataset=rows(BATCH, dtype, seed=2),
                         optimizers=(optimizer(case, module), None), callbacks=[Reseed()])


@pytest.mark.parametrize("accumulate", [1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_the_trainer_steps_exactly_as_the_stepper(case: str, accumulate: int, tmp_path: Path):
    expected, _, schedule = reference(case, accumulate)
    trainer = hosted(case, tmp_path, accumulate)
    trainer.train()
    assert all(torch.equal(a, b) for a, b in zip(state(expected), state(trainer.model)))
    assert trainer.state.global_step == len(group_sizes(accumulate))           # optimizer steps
    assert trainer.stepper.micro_steps == BATCHES
    assert trainer.lr_scheduler.get_last_lr() == schedule.get_last_lr()      # once per optimizer step


def test_bf16_autocast_is_the_stepper_s_bit_for_bit(tmp_path: Path):
    expected, _, _ = reference("sam", 2, "bf16", torch.float32)
    fp32, _, _ = reference("sam", 2, "fp32", torch.float32)
    trainer = hosted("sam", tmp_path, 2, torch.float32, bf16=True)
    trainer.train()
    assert all(torch.equal(a, b) for a, b in zip(state(expected), state(trainer.model)))
    assert not all(torch.equal(a, b) for a, b in zip(state(fp32), state(trainer.model)))   # autocast was on


def loss_of(module: nn.Module, data: Rows) -> float:
    module.eval()
    with torch.no_grad():
        loss = F.cross_entropy(module(data.x).logits, data.labels).item()
    module.train()
    return loss


def test_evaluation_sees_the_evaluation_weights_and_training_goes_on_with_the_training_weights(tmp_path: Path):
    validation = rows(BATCH, seed=2)
    slow, fast = [], []

    def record(module: nn.Module, method: torch.optim.Optimizer) -> None:
        fast.append(loss_of(module, validation))
        with evaluation_weights(method):
            slow.append(loss_of(module, validation))

    expected, method, _ = reference("lookahead-sam", 1, after_step=record)
    trainer = hosted("lookahead-sam", tmp_path, 1, eval_strategy="steps", eval_steps=1)
    trainer.train()
    losses = [entry["eval_loss"] for entry in trainer.state.log_history if "eval_loss" in entry]
    assert losses == pytest.approx(slow, rel=1e-12, abs=0)
    assert slow[0] != pytest.approx(fast[0], rel=1e-6)          # the slow weights are not the fast ones there
    assert all(torch.equal(a, b) for a, b in zip(state(expected), state(trainer.model)))
    expected.eval()
    with evaluation_weights(method), torch.no_grad():
        logits = expected(validation.x).logits
    assert torch.equal(torch.as_tensor(trainer.predict(validation).predictions), logits)
    assert all(torch.equal(a, b) for a, b in zip(state(expected), state(trainer.model)))


def test_a_checkpoint_holds_the_stepper_and_resuming_restores_it(tmp_path: Path):
    whole = hosted("sam", tmp_path, 2, save_strategy="steps", save_steps=2)
    whole.train()
    saved = torch.load(tmp_path / "checkpoint-2" / STEPPER_NAME, weights_only=True)
    assert (saved["micro_steps"], saved["passes"]) == (4, 8)                # 2 steps of 2 micro-batches
    resumed = hosted("sam", tmp_path, 2, save_strategy="steps", save_steps=2)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert (resumed.stepper.micro_steps, resumed.stepper.passes) == (BATCHES, 2 * BATCHES)
    assert all(torch.equal(a, b) for a, b in zip(state(whole.model), state(resumed.model)))


@pytest.mark.parametrize("kind", [DistributedType.DEEPSPEED, DistributedType.FSDP])
def test_sharded_accelerators_are_refused_in_one_sentence(kind: DistributedType):
    with pytest.raises(TypeError, match=f"FlatminTrainer does not run under {kind.name}: flatmin's methods"):
        refuse_sharding(SimpleNamespace(distributed_type=kind), "FlatminTrainer")
    refuse_sharding(SimpleNamespace(distributed_type=DistributedType.NO), "FlatminTrainer")


def test_the_plain_trainer_is_refused_by_flatmin_s_closure_check(tmp_path: Path):
    module = model()
    before = [p.detach().clone() for p in module.parameters()]
    trainer = Trainer(model=module, args=arguments(tmp_path, 1), train_dataset=rows(BATCH * BATCHES),
                      optimizers=(optimizer("sam", module), None))
    with pytest.raises(TypeError, match="SAM.step needs a closure.*FlatminTrainer"):
        trainer.train()
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))     # BN saw the pass, no step


def test_more_than_one_label_column_is_refused(tmp_path: Path):
    module = model()
    with pytest.raises(TypeError, match="FlatminTrainer takes one label column"):
        FlatminTrainer(model=module, args=arguments(tmp_path, 1, label_names=["labels", "mask"]),
                       optimizers=(optimizer("sam", module), None))
