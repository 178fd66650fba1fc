"""generation.finetune.train: the schedule, the optimizer's groups, checkpoints.

On a GPT-2 of one layer and 16 dimensions built here with transformers (a few
hundred milliseconds), so a run of four steps, a Ctrl-C and a resume take well
under a few seconds on a CPU.
"""

from __future__ import annotations

import itertools
import math
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from generation.finetune.train import (
    CHECKPOINTS,
    TrainConfig,
    Trainer,
    latest_checkpoint,
    validation_loss,
)

VOCAB, BLOCK = 32, 8


def tiny_model(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    return GPT2LMHeadModel(config)


def blocks(count: int = 12, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, size=(count, BLOCK), dtype=np.int64)


def config(**changes: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "steps": 4,
        "batch_size": 2,
        "grad_accum": 2,
        "lr": 1e-2,
        "warmup_steps": 1,
        "weight_decay": 0.1,
        "checkpoint_every": 100,
        "seed": 3,
        "device": "cpu",
    }
    return TrainConfig(**{**values, **changes})


def trainer(run_dir: Path, model: Any = None, **changes: Any) -> Trainer:
    return Trainer(
        model if model is not None else tiny_model(),
        blocks(),
        config(**changes),
        run_dir,
        {"data": "abc", "base": "tiny"},
    )


def no_report(step: int, loss: float, rate: float) -> None:
    pass


# -------------------------------------------------------------------- schedule
def test_warm_up_then_cosine_down_to_a_tenth(tmp_path: Path) -> None:
    factor = trainer(tmp_path, steps=100, warmup_steps=10)._schedule
    assert [factor(s) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.55)  # half way down the cosine
    assert factor(100) == pytest.approx(0.1)
    assert factor(250) == pytest.approx(0.1)  # past the end: stays at the floor
    decay = [factor(s) for s in range(10, 101)]
    assert all(a > b for a, b in itertools.pairwise(decay))
    assert factor(30) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 20 / 90)))


def test_no_warm_up(tmp_path: Path) -> None:
    factor = trainer(tmp_path, steps=10, warmup_steps=0)._schedule
    assert factor(0) == pytest.approx(1.0) and factor(10) == pytest.approx(0.1)


def test_the_scheduler_sets_the_optimizers_rate(tmp_path: Path) -> None:
    t = trainer(tmp_path, steps=20, warmup_steps=4, lr=0.5)
    seen = []
    for _ in range(8):
        seen.append([group["lr"] for group in t.optimizer.param_groups])
        t.optimizer.step()
        t.scheduler.step()
    expected = [0.5 * t._schedule(step) for step in range(8)]
    assert seen == [pytest.approx([rate, rate]) for rate in expected]


# ------------------------------------------------------------ optimizer groups
def test_no_weight_decay_on_biases_and_norms(tmp_path: Path) -> None:
    model = tiny_model()
    t = trainer(tmp_path, model=model, weight_decay=0.1)
    names = {id(p): name for name, p in model.named_parameters()}
    by_decay = {
        group["weight_decay"]: {names[id(p)] for p in group["params"]}
        for group in t.optimizer.param_groups
    }
    assert set(by_decay) == {0.1, 0.0}
    assert by_decay[0.0] and all(
        name.endswith(".bias") or ".ln_" in name or name.startswith("transformer.ln_f")
        for name in by_decay[0.0]
    )
    assert "transformer.h.0.ln_1.weight" in by_decay[0.0]
    assert "transformer.ln_f.weight" in by_decay[0.0]
    assert {"transformer.wte.weight", "transformer.h.0.attn.c_attn.weight"} <= by_decay[0.1]
    assert not any(name.endswith(".bias") or "ln_" in name for name in by_decay[0.1])
    # Every parameter in exactly one group (the output head shares the embedding's).
    assert sorted(by_decay[0.0] | by_decay[0.1]) == sorted(names.values())
    assert not by_decay[0.0] & by_decay[0.1]


# ---------------------------------------------------------------- checkpoints
def weights(model: Any) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_ctrl_c_saves_and_a_resumed_run_ends_where_a_straight_one_does(tmp_path: Path) -> None:
    """Dropout is on (GPT-2's default), so this also checks the RNG is restored."""
    torch.manual_seed(123)
    straight = trainer(tmp_path / "straight")
    seen_straight: list[int] = []
    outcome = straight.run(lambda step, loss, rate: seen_straight.append(step))
    assert outcome.step == 4 and not outcome.interrupted and seen_straight == [1, 2, 3, 4]
    assert math.isfinite(outcome.last_loss) and outcome.tokens_per_s > 0

    torch.manual_seed(123)
    run_dir = tmp_path / "interrupted"
    first = trainer(run_dir)
    before = signal.getsignal(signal.SIGINT)

    def ctrl_c_at_step_two(step: int, loss: float, rate: float) -> None:
        if step == 2:
            signal.raise_signal(signal.SIGINT)  # as a person at the terminal would

    outcome = first.run(ctrl_c_at_step_two)
    assert outcome.step == 2 and outcome.interrupted
    assert signal.getsignal(signal.SIGINT) is before  # the handler was put back
    saved = latest_checkpoint(run_dir)
    assert saved is not None and saved.name == "step-0000002"
    assert {"trainer.pt", "run.json", "config.json"} <= {p.name for p in saved.iterdir()}
    assert not list((run_dir / CHECKPOINTS).glob("*.tmp"))

    resumed = trainer(run_dir, model=GPT2LMHeadModel.from_pretrained(saved))
    torch.manual_seed(999)  # restore() must bring back the RNG, whatever it is now
    resumed.restore(saved)
    assert resumed.step == 2 and resumed.scheduler.last_epoch == 2
    assert resumed.optimizer.param_groups[0]["lr"] == first.optimizer.param_groups[0]["lr"]
    outcome = resumed.run(no_report)
    assert outcome.step == 4 and not outcome.interrupted
    expected, got = weights(straight.model), weights(resumed.model)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)


def test_batches_depend_only_on_seed_and_position(tmp_path: Path) -> None:
    one, two = trainer(tmp_path / "a"), trainer(tmp_path / "b")
    for micro in (0, 5, 6, 7, 100):  # 12 blocks, batches of 2: epoch 1 starts at 6
        assert torch.equal(one._batch(micro), two._batch(micro))
    epoch = torch.cat([one._batch(m) for m in range(6)])
    assert sorted(map(tuple, epoch.tolist())) == sorted(map(tuple, blocks().tolist()))
    assert not torch.equal(epoch, torch.cat([one._batch(m) for m in range(6, 12)]))
    other_seed = trainer(tmp_path / "c", seed=4)
    assert not torch.equal(epoch, torch.cat([other_seed._batch(m) for m in range(6)]))


def test_only_the_newest_checkpoints_are_kept(tmp_path: Path) -> None:
    t = trainer(tmp_path)
    for step in (1, 2, 3, 4):
        t.step = step
        assert t.save_checkpoint().name == f"step-{step:07d}"
    kept = sorted(p.name for p in (tmp_path / CHECKPOINTS).iterdir())
    assert kept == ["step-0000003", "step-0000004"]
    marker = tmp_path / CHECKPOINTS / "step-0000004" / "marker"
    marker.write_text("an existing checkpoint is not written again")
    assert t.save_checkpoint().name == "step-0000004" and marker.exists()


def test_a_leftover_staging_folder_is_replaced(tmp_path: Path) -> None:
    t = trainer(tmp_path)
    t.step = 5
    staging = tmp_path / CHECKPOINTS / "step-0000005.tmp"
    staging.mkdir(parents=True)
    (staging / "half-written").write_text("from a run that was killed")
    folder = t.save_checkpoint()
    assert not staging.exists() and not (folder / "half-written").exists()
    assert latest_checkpoint(tmp_path) == folder


def test_latest_checkpoint_takes_the_newest_complete_one(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None
    root = tmp_path / CHECKPOINTS
    complete = ("trainer.pt", "run.json")
    for name, files in {
        "step-0000002": complete,
        "step-0000010": complete,
        "step-0000011": ("trainer.pt",),  # no run.json: cut short
        "step-0000012.tmp": complete,  # still staging
        "step-12": complete,  # not a name it writes
        "step-0000013": ("run.json",),
    }.items():
        (root / name).mkdir(parents=True)
        for file in files:
            (root / name / file).write_text("x")
    assert latest_checkpoint(tmp_path) == root / "step-0000010"


# ------------------------------------------------------------------ validation
def test_validation_loss_is_the_mean_over_blocks(tmp_path: Path) -> None:
    model = tiny_model()
    data = blocks(5)
    model.train()
    whole = validation_loss(model, data, "cpu", batch_size=8)
    assert model.training  # handed back in training mode
    one_by_one = [validation_loss(model, data[i : i + 1], "cpu") for i in range(5)]
    assert whole == pytest.approx(sum(one_by_one) / 5, rel=1e-5)
    assert validation_loss(model, data, "cpu", batch_size=2) == pytest.approx(whole, rel=1e-5)
    assert whole == pytest.approx(math.log(VOCAB), rel=0.1)  # random weights: near uniform
