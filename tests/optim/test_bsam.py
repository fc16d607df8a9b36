"""bSAM (docs/optimizers.md, "bSAM") against the release's formula (team-approx-bayes/bayesian-sam@936eec1
``optim.py`` ``build_bsam_optimizer``), in float64; its place in build_optimizer and the trainer; and
pytorch_optimizer's BSAM, which computes something else."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from flatmin.errors import ConfigError
from flatmin.optim import BSAM, build_optimizer
from flatmin.optim.bsam import BSAMUpdate
from flatmin.optim.build import TRAIN_SIZE_WITHOUT_DATASET
from flatmin.train import run
from tests.conftest import make_config
from tests.optim.common import MODELS, batches, closure_for, grad, loss_and_grad, mlp, parameters, stepper_for
from tests.train import test_distributed as ddp

#: Small N, so that the noise std 1/sqrt(N·s) and the weight decay prior_precision/N both matter.
SETTINGS = {
    "release": {"lr": 0.5, "betas": (0.9, 0.999), "prior_precision": 40.0, "rho": 0.01, "num_data": 100,
                "data_factor": 4.0, "damping": 0.1, "s_init": 1.0},
    "large_rho": {"lr": 0.1, "betas": (0.8, 0.99), "prior_precision": 5.0, "rho": 0.2, "num_data": 30,
                  "data_factor": 1.0, "damping": 0.05, "s_init": 0.5},
}


def transcribe_bsam(model: nn.Module, theta, m, s, chunks, noises, lr, betas, prior_precision, rho, num_data,
                    data_factor, damping, s_init):
    """One step of the release's ``build_bsam_optimizer`` written out, with ``msharpness`` = the number
    of ``chunks`` (sub-batches) and their noises ε_j: the new (θ, m, s) and the mean loss of the
    noisy passes. ``Ndata`` = num_data·data_factor, ``wdecay`` = prior_precision/Ndata (train.py)."""
    beta1, beta2 = betas
    n_data = num_data * data_factor
    wdecay = prior_precision / n_data
    gs_sum, grad_sum, losses = None, None, []
    for (x, y), noise in zip(chunks, noises):
        noisy = {k: theta[k] + torch.sqrt(1.0 / (n_data * s[k])) * noise[k] for k in theta}
        loss, g = loss_and_grad(model, noisy, x, y)
        losses.append(loss)
        perturbed = {k: theta[k] + rho * g[k] / s[k] for k in theta}
        gp = grad(model, perturbed, x, y)
        gs = {k: torch.sqrt(s[k] * g[k] ** 2.0) for k in theta}
        gs_sum = gs if gs_sum is None else {k: gs_sum[k] + gs[k] for k in theta}
        grad_sum = gp if grad_sum is None else {k: grad_sum[k] + gp[k] for k in theta}
    gs = {k: v / len(chunks) for k, v in gs_sum.items()}
    g = {k: v / len(chunks) for k, v in grad_sum.items()}
    m = {k: beta1 * m[k] + (1 - beta1) * (g[k] + wdecay * theta[k]) for k in theta}
    new_theta = {k: theta[k] - lr * m[k] / s[k] for k in theta}
    s = {k: beta2 * s[k] + (1 - beta2) * (gs[k] + damping + wdecay) for k in theta}
    return new_theta, m, s, torch.stack(losses).mean()


def start_state(theta, s_init):
    return {k: torch.zeros_like(v) for k, v in theta.items()}, {k: torch.full_like(v, s_init) for k, v in theta.items()}


def draw_noise(theta, seed):
    """ε per tensor, in parameter order, from torch's generator seeded with ``seed`` (as BSAM draws it)."""
    torch.manual_seed(seed)
    return {k: torch.randn_like(v) for k, v in theta.items()}


def assert_close(model: nn.Module, expected, worst: list, rtol=1e-10, atol=1e-12):
    for name, p in model.named_parameters():
        worst.append((p.detach() - expected[name]).abs().max().item())
        assert torch.allclose(p.detach(), expected[name], rtol=rtol, atol=atol), name


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_bsam_matches_release(model_name: str, setting: str):
    build_model, build_batches = MODELS[model_name]
    model, hyper = build_model(), SETTINGS[setting]
    optimizer = BSAM(model.parameters(), **hyper)
    theta = parameters(model)
    m, s = start_state(theta, hyper["s_init"])
    worst: list = []
    for step, (x, y) in enumerate(build_batches(5)):
        noise = draw_noise(theta, seed=100 + step)
        theta, m, s, noisy_loss = transcribe_bsam(model, theta, m, s, [(x, y)], [noise], **hyper)
        torch.manual_seed(100 + step)
        loss = optimizer.step(closure_for(model, optimizer, x, y, []))
        assert torch.allclose(loss, noisy_loss, rtol=1e-12)
        assert_close(model, theta, worst)
        state = optimizer.base_optimizer.state
        for name, p in model.named_parameters():
            assert torch.allclose(state[p]["m"], m[name], rtol=1e-10, atol=1e-13), name
            assert torch.allclose(state[p]["s"], s[name], rtol=1e-12, atol=1e-14), name
    print(f"bsam {model_name} {setting}: max |θ − oracle| = {max(worst):.2e}")


def test_gradient_accumulation_is_the_release_batch_split():
    """k micro-batches accumulated by the trainer = the release's ``--batchsplit k``: noise, gs and
    gp per contiguous sub-batch, their means update m, θ, s (docs/optimizers.md, "bSAM")."""
    model, hyper = mlp(), SETTINGS["large_rho"]
    runner = stepper_for(model, BSAM(model.parameters(), **hyper), accumulate=2)
    theta = parameters(model)
    m, s = start_state(theta, hyper["s_init"])
    worst: list = []
    for step, (x, y) in enumerate(batches(4)):
        halves = [(x[:8], y[:8]), (x[8:], y[8:])]
        noises = []
        for j, (xs, ys) in enumerate(halves):
            noises.append(draw_noise(theta, seed=10 * step + j))
            torch.manual_seed(10 * step + j)
            runner.step(xs, ys)
        theta, m, s, _ = transcribe_bsam(model, theta, m, s, halves, noises, **hyper)
        assert_close(model, theta, worst)


def test_nothing_perturbed_takes_both_gradients_at_theta():
    """perturb=False everywhere: no noise, no ascent; gp = g = ∇L(θ) and gs = sqrt(s·g²)."""
    model, hyper = mlp(), SETTINGS["large_rho"]
    optimizer = BSAM([{"params": list(model.parameters()), "perturb": False}], **hyper)
    theta = parameters(model)
    m, s = start_state(theta, hyper["s_init"])
    zero = {k: torch.zeros_like(v) for k, v in theta.items()}
    worst: list = []
    for x, y in batches(5):
        theta, m, s, _ = transcribe_bsam(model, theta, m, s, [(x, y)], [zero], **{**hyper, "rho": 0.0})
        optimizer.step(closure_for(model, optimizer, x, y, []))
        assert_close(model, theta, worst)


def draw_noises(theta, seed, count):
    """ε_0, …, ε_{count−1}: one per chunk, drawn one after the other from torch's generator seeded
    with ``seed``, each per tensor in parameter order (as BSAM draws them before each chunk's first pass)."""
    torch.manual_seed(seed)
    return [{k: torch.randn_like(v) for k, v in theta.items()} for _ in range(count)]


@pytest.mark.parametrize("batch_split", [2, 4])
@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_bsam_batch_split_matches_release_m_sharpness(model_name: str, setting: str, batch_split: int):
    """The release's ``--batchsplit``: contiguous chunks (torch.arange(B).chunk), each its own noise,
    noisy then perturbed pass on its rows; gs and gp averaged; the mean of the noisy losses returned."""
    build_model, build_batches = MODELS[model_name]
    model, hyper = build_model(), SETTINGS[setting]
    optimizer = BSAM(model.parameters(), **hyper, batch_split=batch_split)
    assert optimizer.passes_per_step == 2 * batch_split
    theta = parameters(model)
    m, s = start_state(theta, hyper["s_init"])
    worst: list = []
    for step, (x, y) in enumerate(build_batches(5)):
        rows = torch.arange(len(y)).chunk(batch_split)
        noises = draw_noises(theta, 100 + step, batch_split)
        theta, m, s, noisy_loss = transcribe_bsam(model, theta, m, s, [(x[r], y[r]) for r in rows], noises, **hyper)
        torch.manual_seed(100 + step)
        calls: list = []
        loss = optimizer.step(closure_for(model, optimizer, x, y, calls))
        assert [c["indices"].tolist() for c in calls] == [r.tolist() for r in rows for _ in range(2)]
        assert all(c["backward"] and not c["per_example"] for c in calls)
        assert torch.allclose(loss, noisy_loss, rtol=1e-12)
        assert_close(model, theta, worst)
        state = optimizer.base_optimizer.state
        for name, p in model.named_parameters():
            assert torch.allclose(state[p]["m"], m[name], rtol=1e-10, atol=1e-13), name
            assert torch.allclose(state[p]["s"], s[name], rtol=1e-12, atol=1e-14), name
    print(f"bsam split {batch_split} {model_name} {setting}: max |θ − oracle| = {max(worst):.2e}")


def test_bsam_batch_split_one_takes_two_plain_passes_on_the_whole_batch():
    """batch_split = 1 needs no extended closure: a plain closure, two calls on every row, and the same
    trajectory bit for bit as through an extended closure (which it calls without keywords)."""
    models = [mlp(), mlp()]
    optimizers = [BSAM(model.parameters(), **SETTINGS["large_rho"]) for model in models]
    for step, (x, y) in enumerate(batches(4)):
        plain_calls = []

        def plain():
            plain_calls.append(1)
            optimizers[0].zero_grad()
            loss = nn.functional.cross_entropy(models[0](x), y)
            loss.backward()
            return loss

        torch.manual_seed(step)
        optimizers[0].step(plain)
        calls: list = []
        torch.manual_seed(step)
        optimizers[1].step(closure_for(models[1], optimizers[1], x, y, calls))
        assert len(plain_calls) == 2 and [c["indices"] for c in calls] == [None, None]
        for p, q in zip(*(model.parameters() for model in models)):
            assert torch.equal(p, q)


def test_bsam_batch_split_refuses_a_batch_it_cannot_split_and_a_plain_closure_before_any_pass():
    model = mlp()
    optimizer = BSAM(model.parameters(), **SETTINGS["large_rho"], batch_split=2)
    before = parameters(model)
    x, y = batches(1)[0]
    calls: list = []
    with pytest.raises(ValueError) as refused:
        optimizer.step(closure_for(model, optimizer, x[:15], y[:15], calls))
    assert str(refused.value).startswith("BSAM: the batch has B=15 rows, not divisible by batch_split=2")

    def plain():
        calls.append(1)
        return torch.zeros(())

    with pytest.raises(TypeError) as refused:
        optimizer.step(plain)
    assert str(refused.value) == (
        "BSAM needs a closure of the extended protocol, closure(indices=None, backward=True, per_example=False) "
        "with an int attribute batch_size; this one lacks indices=, backward=, per_example=, an int attribute "
        "batch_size")
    assert calls == [] and not optimizer.base_optimizer.state
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name


def test_batch_split_in_one_step_equals_accumulating_its_chunks():
    """batch_split k on B rows computes what the trainer's accumulation of the k contiguous chunks as
    micro-batches computes (same noise order): both are the release's --batchsplit. BatchNorm statistics
    differ (not in this MLP): the split keeps chunk 0's noisy pass, accumulation every micro-batch's first."""
    models = [mlp(), mlp()]
    hyper = SETTINGS["large_rho"]
    split = stepper_for(models[0], BSAM(models[0].parameters(), **hyper, batch_split=2))
    accumulated = stepper_for(models[1], BSAM(models[1].parameters(), **hyper), accumulate=2)
    for step, (x, y) in enumerate(batches(4)):
        torch.manual_seed(step)
        split.step(x, y)
        torch.manual_seed(step)
        for rows in torch.arange(16).chunk(2):
            accumulated.step(x[rows], y[rows])
    assert split.passes == accumulated.passes == 16
    for p, q in zip(*(model.parameters() for model in models)):
        assert torch.allclose(p, q, rtol=1e-12, atol=1e-14)


def test_bsam_refuses_what_it_lacks_and_a_second_weight_decay():
    params = list(mlp().parameters())
    with pytest.raises(ValueError, match="BSAM: batch_split must be a positive integer"):
        BSAM(params, num_data=100, batch_split=0)
    with pytest.raises(ValueError, match="BSAM: num_data is required"):
        BSAM(params)
    with pytest.raises(ValueError, match="weight_decay must be 0"):
        BSAM([{"params": params, "weight_decay": 5e-4}], num_data=100)
    with pytest.raises(ValueError, match=r"BSAM: betas must be two numbers in \[0, 1\)"):
        BSAM(params, num_data=100, betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="momentum"):
        BSAM(params, num_data=100, momentum=0.9)


def test_build_optimizer_builds_bsam_without_a_base_and_num_data_from_the_training_split(tmp_path: Path):
    cfg = make_config(tmp_path, "optimizer=bsam")
    model = mlp()
    optimizer = build_optimizer(cfg.optimizer, model, train_size=1234)
    assert isinstance(optimizer, BSAM) and type(optimizer.base_optimizer) is BSAMUpdate
    group = optimizer.param_groups[0]
    assert group["num_data"] == 1234 and group["data_factor"] == 4.0 and group["lr"] == 0.5
    assert group["betas"] == (0.9, 0.999) and optimizer.passes_per_step == 2
    assert build_optimizer(cfg.optimizer, model).param_groups[0]["num_data"] == TRAIN_SIZE_WITHOUT_DATASET
    explicit = make_config(tmp_path, "optimizer=bsam", "optimizer.num_data=50")
    assert build_optimizer(explicit.optimizer, model, train_size=1234).param_groups[0]["num_data"] == 50
    split = make_config(tmp_path, "optimizer=bsam", "optimizer.batch_split=8")
    assert build_optimizer(split.optimizer, model).passes_per_step == 16
    for overrides, message in [
        (["optimizer.weight_decay=5e-4"], "optimizer 'bsam' (bsam) refuses these settings: optimizer.weight_decay "
                                          "is 0.0005; bSAM's weight decay is prior_precision/(num_data·data_factor)"),
    ]:
        with pytest.raises(ConfigError) as caught:
            build_optimizer(make_config(tmp_path, "optimizer=bsam", *overrides).optimizer, model)
        assert str(caught.value).startswith(message), str(caught.value)


def test_the_trainer_gives_bsam_the_training_split_size(cfg_factory, monkeypatch):
    import importlib

    from flatmin.data import build_dataset

    assembly = importlib.import_module("flatmin.assembly")
    torch.set_default_dtype(torch.float32)                         # a real run (the fixture restores it)
    built = []
    real_build = assembly.build_optimizer

    def recording_build(*args, **kwargs):
        built.append(real_build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(assembly, "build_optimizer", recording_build)
    cfg = cfg_factory("optimizer=bsam", "trainer.epochs=1", "trainer.limit_train_batches=2")
    run(cfg)
    assert [o.param_groups[0]["num_data"] for o in built] == [len(build_dataset(cfg.dataset).train)]


# -- DDP: gs is averaged across replicas with G ----------------------------------------------------
def bsam_worker(rank: int, world_size: int, port: int, out: Path) -> None:
    """Three bSAM steps, each replica on its own half of the batch and its own noise."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    calls = []
    real_all_reduce = dist.all_reduce

    def counting_all_reduce(*args, **kwargs):
        calls.append(1)
        return real_all_reduce(*args, **kwargs)

    dist.all_reduce = counting_all_reduce
    module = ddp.mlp()
    runner = ddp.stepper(DistributedDataParallel(module), BSAM(module.parameters(), **SETTINGS["large_rho"]))
    x, y = ddp.dataset().tensors
    torch.manual_seed(10 + rank)
    for step in range(3):
        rows = slice(16 * step, 16 * step + 16)
        runner.step(x[rows][rank::2], y[rows][rank::2])
    dist.all_reduce = real_all_reduce
    torch.save({"params": [p.detach() for p in module.parameters()], "all_reduces": len(calls)},
               out / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_under_ddp_replicas_average_g_and_gs_and_stay_identical(tmp_path: Path):
    torch.set_default_dtype(torch.float32)                         # as in the workers: the same initial mlp
    mp.spawn(bsam_worker, args=(2, ddp.free_port(), tmp_path), nprocs=2)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [r["all_reduces"] for r in results] == [3, 3]          # G and gs in one all-reduce
    for p, q in zip(*(r["params"] for r in results)):
        assert torch.equal(p, q)                                   # s stayed the same on both
    # = one process accumulating the replicas' halves, each with that replica's noise.
    module = ddp.mlp()
    runner = ddp.stepper(module, BSAM(module.parameters(), **SETTINGS["large_rho"]), accumulate=2)
    x, y = ddp.dataset().tensors
    generators = []
    for rank in range(2):
        torch.manual_seed(10 + rank)
        generators.append(torch.random.get_rng_state())
    for step in range(3):
        rows = slice(16 * step, 16 * step + 16)
        for rank in range(2):
            torch.random.set_rng_state(generators[rank])
            runner.step(x[rows][rank::2], y[rows][rank::2])
            generators[rank] = torch.random.get_rng_state()
    for p, q in zip(module.parameters(), results[0]["params"]):
        assert torch.allclose(p, q, rtol=0, atol=1e-12)


# -- pytorch_optimizer's BSAM -------------------------------------------------------------------------
def transcribe_pytorch_optimizer_bsam(model, w, m, s, x, y, num_data, lr, betas, weight_decay, rho, damping):
    """pytorch_optimizer 4.1.0 ``BSAM.step`` as the spec documents its differences: noise of std
    1/(N·s) added to the weights and never removed, the ascent added on top of it and never removed,
    m ← lerp(m, wd·gp, 1−β1), s ← lerp(s, (sqrt(s)·|gp| + wd + damping)², 1−β2), then w ← w − lr·m/s
    with the new s. Its noise is ``torch.normal(0, 1/(N·s))`` per tensor."""
    beta1, beta2 = betas
    w = {k: w[k] + torch.normal(0.0, 1 / (num_data * s[k])) for k in w}
    g = grad(model, w, x, y)
    w = {k: w[k] + rho * g[k] / s[k] for k in w}
    gp = grad(model, w, x, y)
    m = {k: m[k] + (1 - beta1) * (weight_decay * gp[k] - m[k]) for k in w}
    s = {k: s[k] + (1 - beta2) * ((torch.sqrt(s[k]) * gp[k].abs() + weight_decay + damping) ** 2 - s[k]) for k in w}
    return {k: w[k] - lr * m[k] / s[k] for k in w}, m, s


def test_pytorch_optimizer_bsam_differs_as_documented():
    from pytorch_optimizer import BSAM as PeerBSAM

    num_data, lr, betas, rho, damping, prior_precision = 100, 0.1, (0.9, 0.999), 0.05, 0.1, 40.0
    weight_decay = prior_precision / num_data
    data = batches(5)
    peer_model, own_model = mlp(), mlp()
    peer = PeerBSAM(peer_model.parameters(), num_data=num_data, lr=lr, betas=betas, weight_decay=weight_decay,
                    rho=rho, damping=damping)
    nn.functional.cross_entropy(peer_model(data[0][0]), data[0][1]).backward()   # its first step needs .grad
    own = BSAM(own_model.parameters(), lr=lr, betas=betas, prior_precision=prior_precision, rho=rho,
               num_data=num_data, damping=damping)
    w = parameters(peer_model)
    m, s = start_state(w, 1.0)
    for step, (x, y) in enumerate(data):
        torch.manual_seed(step)
        w, m, s = transcribe_pytorch_optimizer_bsam(peer_model, w, m, s, x, y, num_data, lr, betas, weight_decay,
                                                    rho, damping)
        torch.manual_seed(step)
        peer.step(closure_for(peer_model, peer, x, y, []))
        torch.manual_seed(step)
        own.step(closure_for(own_model, own, x, y, []))
        assert_close(peer_model, w, [])                            # it does what the spec says it does
    difference = max((p - q).abs().max().item() for p, q in zip(peer_model.parameters(), own_model.parameters()))
    assert difference > 1e-2, difference                           # which is not the release's bSAM
