"""A method is declared once: its class's hyperparameters give the constructor, the config checks,
the schedulable keys, the report's labels and the README's method table."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from flatmin.validation import validate
from flatmin.errors import ConfigError
from flatmin.optim import BSAM, ESAM, METHODS, RWP, SAM, build_optimizer, method_label, method_table
from flatmin.optim.registry import COMMON_BLOCK, options
from flatmin.optim.settings import SHARED, SHARED_KEYS, flat_keys
from tests.conftest import ROOT, make_config, run_cli
from tests.optim.common import SGD_KWARGS, batches, closure_for, mlp, stepper_for


def test_the_readme_method_table_is_the_one_the_declarations_give():
    assert method_table() in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("option", sorted(options()))
def test_each_option_lists_its_methods_hyperparameters_and_is_reported_under_its_own_name(tmp_path: Path,
                                                                                         option: str):
    cfg = make_config(tmp_path, f"optimizer={option}")
    validate(cfg)
    settings = OmegaConf.to_container(cfg.optimizer, resolve=True)
    method = settings["method"]
    assert method is None or method in METHODS
    declared = set(METHODS[method].hyperparameters) if method else set()
    assert declared <= set(settings), f"{option} does not list {declared - set(settings)}"
    assert set(settings) <= declared | SHARED_KEYS
    assert settings["name"] == option and method_label(settings) == option


def test_the_shared_block_holds_the_declared_settings_and_their_checks_accept_its_values():
    block = OmegaConf.to_container(OmegaConf.load(COMMON_BLOCK))
    assert set(flat_keys(block)) == set(SHARED) - {"name"}       # each option names itself
    for key in flat_keys(block):
        value = OmegaConf.select(OmegaConf.create(block), key)
        assert SHARED[key].check(value), key


def test_the_constructor_signature_and_checks_come_from_the_declarations():
    signature = inspect.signature(SAM)
    assert {name: p.default for name, p in signature.parameters.items() if p.kind == p.KEYWORD_ONLY} == \
        {"rho": 0.05, "adaptive": False, "eta": 0.01, "normalize": True}
    with pytest.raises(ValueError, match=r"SAM: rho must be a number >= 0 \(got -1\)"):
        SAM(mlp().parameters(), torch.optim.SGD, rho=-1, lr=0.1)


def test_a_run_is_labelled_by_the_option_its_settings_amount_to(tmp_path: Path):
    def label(*overrides: str) -> str:
        return method_label(OmegaConf.to_container(make_config(tmp_path, *overrides).optimizer, resolve=True))

    assert label("optimizer=sam", "optimizer.adaptive=true") == "asam"
    assert label("optimizer=sam", "optimizer.normalize=false") == "usam"
    assert label("optimizer=asam", "optimizer.perturb=norm") == "sam_on"
    assert label("optimizer=sgd_tracer", "optimizer.base=adam") == "adam_tracer"
    assert label("optimizer=sgd", "optimizer.base=adam") == "adam"
    assert label("optimizer=sam", "optimizer.base=adam") == "sam"


@pytest.mark.parametrize(("overrides", "message"), [
    (["optimizer=sam", "+optimizer.rhoo=0.1"], "optimizer.rhoo is not a setting of optimizer 'sam'"),
    (["optimizer=sgd", "+optimizer.rho=0.1"], "optimizer.rho is not a setting of optimizer 'sgd'"),
    (["optimizer=sam", "optimizer.method=nosuch"], "optimizer.method must be null or one of "),
    (["optimizer=sam", "optimizer.base=nosuch"], "optimizer.base must be one of adam, adamw, sgd or an optimizer "
                                                 "timm.optim creates ("),
    (["optimizer=gam", "optimizer.variant=arxiv"], "optimizer.variant must be one of released, paper (got 'arxiv')."),
    (["optimizer=sgd", "optimizer.nesterov=true", "optimizer.momentum=0"],
     "optimizer 'sgd' (no method over sgd) refuses these settings: Nesterov momentum requires a momentum > 0 "
     "(optimizer.momentum is 0)."),
    (["optimizer=adam", "optimizer.betas=[0.9,1.5]"],
     "optimizer.betas must be two numbers in [0, 1) (got [0.9, 1.5])."),
    (["optimizer=adam", "optimizer.amsgrad=false_"], "optimizer.amsgrad must be true or false (got 'false_')."),
    (["optimizer=sam", "+optimizer.lookahead.kk=3"], "optimizer.lookahead.kk is not a setting of optimizer 'sam'"),
    (["optimizer=msam", "optimizer.momentum=0"], "optimizer 'msam' (msam over sgd) refuses these settings: MSAM "
                                                 "perturbs along the base optimizer's first moment"),
    (["optimizer=sgd", "+optimizer.base_kwargs.betas=[0.9,0.99]"], "optimizer 'sgd' (no method over sgd) refuses "
                                                                   "these settings: optimizer.base_kwargs (betas) "
                                                                   "is for a timm base"),
    (["optimizer=sam", "optimizer.base=lion", "+optimizer.base_kwargs.momentum=0.9"],
     "optimizer 'sam' (sam over lion) refuses these settings: lion takes no argument 'momentum' "
     "(optimizer.base_kwargs)."),
])
def test_a_setting_the_method_does_not_declare_or_refuses_is_one_sentence(tmp_path: Path, overrides, message):
    with pytest.raises(ConfigError) as caught:
        validate(make_config(tmp_path, *overrides))
    assert str(caught.value).startswith(message), str(caught.value)


@pytest.mark.parametrize(("method", "make", "settings", "rows"), [
    (BSAM, lambda p: BSAM(p, lr=0.1, num_data=100, batch_split=3), {"batch_split": 3}, 16),
    (ESAM, lambda p: ESAM(p, torch.optim.SGD, gamma=0.1, **SGD_KWARGS), {"gamma": 0.1}, 16),
    (RWP, lambda p: RWP(p, torch.optim.SGD, lam=0.5, **SGD_KWARGS), {"lam": 0.5}, 1),
], ids=["bsam", "esam", "rwp"])
def test_a_methods_batch_rule_is_the_sentence_its_step_raises(method, make, settings, rows):
    """What the config check says of a batch (``batch_requirements``) is what the step refuses."""
    (problem,) = [requirement.problem(settings, rows) for requirement in method.batch_requirements]
    model = mlp()
    x, y = batches(1)[0]
    with pytest.raises(ValueError) as refused:
        stepper_for(model, make(model.parameters())).step(x[:rows], y[:rows])
    assert str(refused.value) == problem
    assert [requirement.problem(settings, 48) for requirement in method.batch_requirements] == [None]


def test_the_command_line_refuses_an_undeclared_key_before_work_starts(tmp_path: Path):
    result = run_cli("optimizer=sam", "+optimizer.rhoo=0.1", log_dir=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "flatmin: error: optimizer.rhoo is not a setting of optimizer 'sam'" in result.stderr


def test_any_timm_optimizer_is_a_base_by_name(tmp_path: Path):
    cfg = make_config(tmp_path, "optimizer=sam", "optimizer.base=lion", "optimizer.lr=1e-4",
                      "+optimizer.base_kwargs.betas=[0.9,0.99]")
    validate(cfg)
    model = mlp(dtype=torch.float32)
    optimizer = build_optimizer(cfg.optimizer, model)
    assert type(optimizer.base_optimizer).__name__ == "Lion"
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.99)
    before = [p.detach().clone() for p in model.parameters()]
    for x, y in batches(2, dtype=torch.float32):
        optimizer.step(closure_for(model, optimizer, x, y, []))
    assert all(not torch.equal(p, b) for p, b in zip(model.parameters(), before))
