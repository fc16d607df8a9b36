"""Lightning through ``FlatminMixin`` leaves the parameters and BatchNorm buffers that flatmin's
``Stepper`` leaves on the same micro-batches, bit for bit in float64 (the real lightning and
pytorch_lightning, on the CPU); its step count, schedules, evaluation weights, checkpoints and
refusals."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as L
import pytest
import pytorch_lightning
import torch
from lightning.pytorch.plugins import MixedPrecision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from flatmin.integrations.lightning import FlatminMixin
from flatmin.optim import build_optimizer
from flatmin.optim.multipass import evaluation_weights
from flatmin.runtime import Runtime
from flatmin.step import Stepper

#: The spec's methods: two passes, three (GAM), the extended closure (ESAM, bSAM's split), USAM, a
#: wrapper (Lookahead over SAM), and a single-pass base.
CASES = {"sam": {}, "gam": {}, "esam": {}, "bsam": {"batch_split": 2, "weight_decay": 0.0}, "usam": {},
         "lookahead-sam": {"lookahead": {"enabled": True, "k": 2}}, "sgd": {}}
BATCHES = 7                                          # with accumulation 2, the epoch's last group is short
LR_STEP = {"step_size": 2, "gamma": 0.5}


def network(dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)).to(dtype)


def batches(dtype: torch.dtype = torch.float64, count: int = BATCHES, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 6, generator=generator, dtype=dtype), torch.randint(0, 3, (8,), generator=generator))
            for _ in range(count)]


def loader(data: list[tuple[torch.Tensor, torch.Tensor]]) -> DataLoader:
    return DataLoader(TensorDataset(torch.cat([x for x, _ in data]), torch.cat([y for _, y in data])), batch_size=8)


def optimizer(case: str, module: nn.Module, **settings) -> torch.optim.Optimizer:
    return build_optimizer(case.removeprefix("lookahead-"), module, lr=0.05, **{**CASES[case], **settings})


def group_sizes(accumulate: int, count: int = BATCHES) -> list[int]:
    return [min(accumulate, count - start) for start in range(0, count, accumulate)]


def state(module: nn.Module) -> list[torch.Tensor]:
    return [tensor.detach().clone() for tensor in (*module.parameters(), *module.buffers())]


def reference(case: str, accumulate: int, epochs: int = 1, precision: str = "fp32", dtype=torch.float64,
              scaler_scale: float | None = None) -> tuple[nn.Module, torch.optim.Optimizer, Stepper]:
    """flatmin's Stepper on the same micro-batches, with a StepLR stepped once per ended step."""
    module = network(dtype)
    method = optimizer(case, module)
    scheduler = torch.optim.lr_scheduler.StepLR(method, **LR_STEP)
    runtime = Runtime.local("cpu", precision)
    scaler = runtime.precision.loss_scaler()
    if scaler_scale is not None:
        scaler.scale.fill_(scaler_scale)
    stepper = Stepper(module, method, runtime, accumulate=accumulate, grad_clip_norm=1.0, scaler=scaler)
    for _ in range(epochs):
        data = iter(batches(dtype))
        for size in group_sizes(accumulate):
            for _ in range(size):
                torch.manual_seed(7)                # ESAM's selection and bSAM's noise draw the same
                stepper.step(*next(data), group_size=size)
            scheduler.step()
    return module, method, stepper


def module_class(base: type) -> type:
    """A LightningModule as a user writes one, with the mixin first, on ``base`` (the
    ``LightningModule`` of lightning.pytorch or of pytorch_lightning)."""

    class Net(FlatminMixin, base):
        def __init__(self, case: str, accumulate: int = 1, dtype: torch.dtype = torch.float64) -> None:
            super().__init__()
            self.model = network(dtype)
            self.case = case
            self.flatmin_accumulate = accumulate
            self.flatmin_grad_clip_norm = 1.0
            self.validated: list[list[torch.Tensor]] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)

        def flatmin_batch(self, batch):
            torch.manual_seed(7)                    # as the reference, before each micro-batch
            return super().flatmin_batch(batch)

        def configure_optimizers(self):
            method = optimizer(self.case, self)
            schedule = torch.optim.lr_scheduler.StepLR(method, **LR_STEP)
            return {"optimizer": method, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

        def validation_step(self, batch, batch_idx):
            if batch_idx == 0:
                self.validated.append(state(self.model))

    return Net


Net = module_class(L.LightningModule)


def fit(module: L.LightningModule, epochs: int = 1, validate: bool = False, trainer_class=L.Trainer,
        **settings) -> L.Trainer:
    settings = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                "enable_model_summary": False, "limit_val_batches": 1 if validate else 0, "num_sanity_val_steps": 0,
                **settings}
    trainer = trainer_class(max_epochs=epochs, accelerator="cpu", **settings)
    trainer.fit(module, loader(batches(next(module.parameters()).dtype)),
                loader(batches(count=1)) if validate else None)
    return trainer


@pytest.mark.parametrize("accumulate", [1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_a_lightning_module_steps_exactly_as_the_stepper(case: str, accumulate: int):
    expected, _, _ = reference(case, accumulate)
    module = Net(case, accumulate)
    trainer = fit(module)
    assert all(torch.equal(a, b) for a, b in zip(state(expected), state(module.model)))
    assert trainer.global_step == len(group_sizes(accumulate))       # optimizer steps, not micro-batches
    assert module.flatmin_stepper.micro_steps == BATCHES


def test_the_mixin_works_under_the_pytorch_lightning_name_too():
    expected, _, _ = reference("sam", 2)
    module = module_class(pytorch_lightning.LightningModule)("sam", 2)
    fit(module, trainer_class=pytorch_lightning.Trainer)
    assert all(torch.equal(a, b) for a, b in zip(state(expected), state(module.model)))


@pytest.mark.parametrize("case", ["sam", "gam", "bsam", "usam"])
def test_fp16_with_an_overflow_skips_the_step_as_the_stepper_does(case: str):
    """Lightning's fp16 plugin on the CPU (``MixedPrecision("16-mixed", "cpu")``) with a loss scale so
    large that the first steps overflow: its GradScaler's settings become flatmin's loss scaler."""
    scale = 2.0 ** 40
    expected, _, stepper = reference(case, 2, precision="fp16", dtype=torch.float32, scaler_scale=scale)
    module = Net(case, 2, torch.float32)
    host = torch.amp.GradScaler("cpu", init_scale=scale)
    trainer = fit(module, plugins=[MixedPrecision("16-mixed", "cpu", scaler=host)])
    assert module.flatmin_stepper.scaler.scale.item() < scale                  # it overflowed and backed off
    assert module.flatmin_stepper.scaler.scale.item() == stepper.scaler.scale.item()
    assert all(torch.equal(a, b) for a, b in zip(state(expected), state(module.model)))
    assert trainer.global_step == len(group_sizes(2))                         # skipped steps count


def test_validation_sees_the_evaluation_weights_and_training_goes_on_with_the_training_weights(tmp_path: Path):
    """Lookahead over SAM: validation after the first epoch sees the slow weights; the second epoch
    continues from the fast ones, as if validation had not happened, and ModelCheckpoint (which
    saves after validation) saves the training weights."""
    after_one, method, _ = reference("lookahead-sam", 1)          # 7 steps: the fast weights are 1 past a sync
    with evaluation_weights(method):
        slow = state(after_one)
    expected, _, _ = reference("lookahead-sam", 1, epochs=2)
    module = Net("lookahead-sam", 1)
    fit(module, epochs=2, validate=True, enable_checkpointing=True,
        callbacks=[L.callbacks.ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1,
                                                    save_on_train_epoch_end=False)])
    assert len(module.validated) == 2
    assert all(torch.equal(a, b) for a, b in zip(slow, module.validated[0]))
    assert not all(torch.equal(a, b) for a, b in zip(slow, state(after_one)))    # the slow weights differ
    assert all(torch.equal(a, b) for a, b in zip(state(expected), state(module.model)))
    saved = torch.load(tmp_path / "epoch=0.ckpt", weights_only=False)["state_dict"]       # after validation
    assert all(torch.equal(saved[f"model.{name}"], tensor) for name, tensor in after_one.state_dict().items())


def test_a_resumed_fit_continues_the_stepper_and_ends_where_an_uninterrupted_one_does(tmp_path: Path):
    expected, _, _ = reference("sam", 2, epochs=2)
    first = Net("sam", 2)
    trainer = fit(first)
    trainer.save_checkpoint(tmp_path / "one.ckpt")
    assert torch.load(tmp_path / "one.ckpt", weights_only=False)["flatmin_stepper"]["micro_steps"] == BATCHES
    resumed = Net("sam", 2)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(resumed, loader(batches()), ckpt_path=tmp_path / "one.ckpt")
    assert resumed.flatmin_stepper.micro_steps == 2 * BATCHES
    assert trainer.global_step == 2 * len(group_sizes(2))
    assert all(torch.equal(a, b) for a, b in zip(state(expected), state(resumed.model)))


def test_automatic_optimization_turned_back_on_stops_the_fit_at_its_start():
    module = Net("sam")
    module.automatic_optimization = True
    with pytest.raises(TypeError, match="automatic_optimization"):
        fit(module)
    assert module.flatmin_stepper is None                              # no pass was taken


class Automatic(L.LightningModule):
    """A plain LightningModule (automatic optimisation) given flatmin's SAM."""

    def __init__(self) -> None:
        super().__init__()
        self.model = network()

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self.model(batch[0]), batch[1])

    def configure_optimizers(self):
        return build_optimizer("sam", self, lr=0.05)


class ManualClosure(Automatic):
    """Manual optimisation stepping flatmin's SAM through ``LightningOptimizer.step(closure)``."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        def closure():
            loss = nn.functional.cross_entropy(self.model(batch[0]), batch[1])
            self.manual_backward(loss)
            return loss
        self.optimizers().step(closure)


@pytest.mark.parametrize("module_class", [Automatic, ManualClosure])
def test_a_flatmin_method_stepped_through_lightnings_optimizer_step_is_refused(module_class):
    module = module_class()
    before = state(module.model)
    with pytest.raises(TypeError, match="FlatminMixin"):
        fit(module)
    assert all(torch.equal(a, b) for a, b in zip(before, state(module.model)))




def test_an_epoch_schedule_steps_at_each_epoch_end_and_a_plateau_schedule_is_refused():
    """Lightning steps no scheduler under manual optimisation: the mixin steps an epoch-interval one
    at each epoch's end; a ReduceLROnPlateau, whose monitor Lightning drops there, is one sentence."""

    class Epochly(Net):
        def configure_optimizers(self):
            method = optimizer(self.case, self)
            return {"optimizer": method, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.ExponentialLR(
                method, gamma=0.5), "interval": "epoch"}}

    module = Epochly("sam")
    fit(module, epochs=3)
    assert module.optimizers().param_groups[0]["lr"] == 0.05 * 0.5 ** 3

    class Plateau(Net):
        def configure_optimizers(self):
            method = optimizer(self.case, self)
            return {"optimizer": method, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(
                method), "interval": "epoch"}}

    with pytest.raises(TypeError, match="FlatminMixin cannot step a ReduceLROnPlateau: Lightning drops its monitor"):
        fit(Plateau("sam"))
