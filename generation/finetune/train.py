"""The training loop: AdamW, warm-up then cosine decay, gradient accumulation,
checkpoints that a later run resumes from exactly, and a clean stop on Ctrl-C.

fp32 on CPU; on a GPU, bf16 autocast where the card has it, else fp16 with a
gradient scaler. The order of the blocks is a pure function of the seed and the
position in the run, so a resumed run sees the same batches it would have seen.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int
    grad_accum: int
    lr: float
    warmup_steps: int
    weight_decay: float
    checkpoint_every: int
    seed: int
    device: str

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum


@dataclass
class Outcome:
    step: int  # optimizer steps done
    interrupted: bool
    seconds: float
    tokens_per_s: float
    last_loss: float


class Trainer:
    def __init__(
        self,
        model: Any,
        train: npt.NDArray[np.int64],
        config: TrainConfig,
        run_dir: Path,
        fingerprint: dict[str, Any],
    ) -> None:
        self.model = model
        self.train = train
        self.config = config
        self.run_dir = run_dir
        self.fingerprint = fingerprint
        self.device = torch.device(config.device)
        self.amp_dtype: torch.dtype | None = None
        if self.device.type == "cuda":
            bf16 = torch.cuda.is_bf16_supported()
            self.amp_dtype = torch.bfloat16 if bf16 else torch.float16
        self.scaler = torch.amp.GradScaler(enabled=self.amp_dtype == torch.float16)
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]  # biases, norms
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": config.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=config.lr,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._schedule)
        self.step = 0
        self._stop = False

    # ------------------------------------------------------------------ schedule
    def _schedule(self, step: int) -> float:
        """Linear warm-up to the full rate, then cosine decay to a tenth of it."""
        warmup = self.config.warmup_steps
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, self.config.steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def _batch(self, micro: int) -> torch.Tensor:
        """Micro-batch number `micro` of the run: the same on a resumed run."""
        size, n = self.config.batch_size, len(self.train)
        rows = []
        for position in range(micro * size, (micro + 1) * size):
            epoch, index = divmod(position, n)
            order = np.random.default_rng([self.config.seed, epoch]).permutation(n)
            rows.append(self.train[order[index]])
        return torch.from_numpy(np.stack(rows)).to(self.device)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # ------------------------------------------------------------------ training
    def seconds_per_step(self) -> float:
        """Time one full step's forward and backward passes, without learning from it."""
        self.model.train()
        started = time.perf_counter()
        # Dropout draws from the RNG: a resumed run must draw what the first would have.
        with torch.random.fork_rng(devices=[]):
            for micro in range(self.config.grad_accum):
                with self._autocast():
                    x = self._batch(micro)
                    loss = self.model(input_ids=x, labels=x).loss
                self.scaler.scale(loss).backward()
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    def run(self, on_step: Callable[[int, float, float], None]) -> Outcome:
        """Train from `self.step` to the end, or until Ctrl-C (which saves a checkpoint)."""
        self.model.train()
        started, tokens, loss_value = time.perf_counter(), 0, float("nan")
        block = self.train.shape[1]
        with self._catch_interrupt():
            while self.step < self.config.steps and not self._stop:
                total = 0.0
                for micro in range(self.config.grad_accum):
                    x = self._batch(self.step * self.config.grad_accum + micro)
                    with self._autocast():
                        loss = self.model(input_ids=x, labels=x).loss / self.config.grad_accum
                    self.scaler.scale(loss).backward()
                    total += float(loss.detach())
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                self.step += 1
                loss_value = total
                tokens += self.config.tokens_per_step * block
                rate = tokens / max(1e-9, time.perf_counter() - started)
                on_step(self.step, loss_value, rate)
                if self.step % self.config.checkpoint_every == 0 or self._stop:
                    self.save_checkpoint()
        seconds = time.perf_counter() - started
        return Outcome(self.step, self._stop, seconds, tokens / max(1e-9, seconds), loss_value)

    @contextlib.contextmanager
    def _catch_interrupt(self) -> Iterator[None]:
        """The first Ctrl-C finishes the step and saves; a second one stops at once."""

        def handler(signum: int, frame: FrameType | None) -> None:
            self._stop = True
            signal.signal(signal.SIGINT, previous)

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    # -------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        """Written to a temporary folder, then renamed: a checkpoint is whole or absent."""
        folder = self.run_dir / CHECKPOINTS / f"step-{self.step:07d}"
        if folder.exists():
            return folder
        staging = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        self.model.save_pretrained(staging)
        torch.save(
            {
                "step": self.step,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "torch_rng": torch.get_rng_state(),
            },
            staging / "trainer.pt",
        )
        (staging / "run.json").write_text(json.dumps(self.fingerprint, indent=2))
        staging.rename(folder)
        for old in sorted((self.run_dir / CHECKPOINTS).glob("step-???????"))[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
        return folder

    def restore(self, folder: Path) -> None:
        state = torch.load(folder / "trainer.pt", map_location=self.device, weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(
        p
        for p in (run_dir / CHECKPOINTS).glob("step-???????")
        if (p / "trainer.pt").is_file() and (p / "run.json").is_file()
    )
    return found[-1] if found else None


@torch.inference_mode()
def validation_loss(
    model: Any, blocks: npt.NDArray[np.int64], device: str, batch_size: int = 8
) -> float:
    """Mean next-token loss over the validation blocks (perplexity = exp of it)."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        x = torch.from_numpy(blocks[start : start + batch_size]).to(device)
        loss = model(input_ids=x, labels=x).loss
        total += float(loss) * len(x)
        count += len(x)
    model.train()
    return total / max(1, count)
