"""The fine-tuning run behind `python -m app.finetune`: a folder of texts -> a model.

Fine-tunes a causal LM on the .txt, .md and .jsonl files of a folder and writes
a normal model folder (safetensors, tokenizer, config, finetune.json with the
run's figures) that the bot loads as it loads GPT-2. Prints an estimate of the
time before it starts; Ctrl-C saves a checkpoint and --resume continues. Adding
the genre that serves the model is the command line's job (app/finetune.py):
this package knows nothing of genres.
"""

from __future__ import annotations

import argparse  # the command line's options, read by finetune()
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from generation.errors import ModelLoadError
from generation.finetune.data import Blocks, Corpus, pack, read_corpus
from generation.modelfiles import MANIFEST, check_model_dir, load_causal_lm, model_id_of

REPORT = "finetune.json"
STATE = "finetune-state.json"  # the run's settings and first validation, for --resume
STAGING = ".final.tmp"


class FinetuneError(Exception):
    """One line for the user; exit status 2."""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def finetune(args: argparse.Namespace) -> int:
    base, out = args.base, args.out
    try:
        check_model_dir(base)
    except ModelLoadError as error:
        raise FinetuneError(f"--base: {error}") from None
    wipe = _check_out(out, base, resume=args.resume, overwrite=args.overwrite)
    corpus = read_corpus(args.data)
    say(
        f"data: {_count(len(corpus.documents), 'text')} from "
        f"{_count(len(corpus.files), 'file')} in {args.data}"
        + (f" ({len(corpus.ignored)} other files ignored)" if corpus.ignored else "")
    )

    import torch

    from generation.finetune.train import TrainConfig, Trainer, latest_checkpoint
    from generation.finetune.train import validation_loss as val_loss

    device = _device(args.device)
    model, tokenizer = load_causal_lm(base)
    context = int(model.config.n_positions)
    block = args.block_size or context
    if not 8 <= block <= context:
        raise FinetuneError(f"--block-size must be between 8 and the model's context, {context}")
    blocks = pack(
        corpus,
        lambda text: tokenizer.encode(text, add_special_tokens=False),
        tokenizer.eos_token_id,
        block,
        validation_fraction=args.validation,
        max_train_tokens=args.max_train_tokens,
        seed=args.seed,
    )
    per_step = args.batch_size * args.grad_accum
    planned = math.ceil(args.epochs * len(blocks.train) / per_step)
    steps = min(planned, args.max_steps)
    say(
        f"{blocks.tokens:,} tokens -> {len(blocks.train)} training and "
        f"{len(blocks.validation)} validation blocks of {block} tokens"
        + (f"; {blocks.dropped_tokens:,} tokens left out" if blocks.dropped_tokens else "")
    )
    if steps < planned:
        say(f"{planned} steps for {args.epochs:g} epoch(s), capped at --max-steps {steps}")
    config = TrainConfig(
        steps=steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr,
        warmup_steps=max(1, round(args.warmup * steps)),
        weight_decay=args.weight_decay,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
        device=device,
    )
    fingerprint = _fingerprint(base, corpus, blocks, config)
    if wipe:  # only now that every input has been checked
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    model.to(device)
    torch.manual_seed(args.seed)  # dropout's draws; a resumed run restores them instead
    checkpoint = latest_checkpoint(out) if args.resume else None
    if checkpoint is not None:
        _check_same_run(checkpoint, fingerprint)
        model = type(model).from_pretrained(str(checkpoint)).to(device)
    trainer = Trainer(model, blocks.train, config, out, fingerprint)
    if checkpoint is not None:
        trainer.restore(checkpoint)
        state = json.loads((out / STATE).read_text())
        before = float(state["validation_loss_before"])
        say(f"resuming from {checkpoint.name}: step {trainer.step} of {steps}")
    else:
        before = val_loss(model, blocks.validation, device)
        (out / STATE).write_text(json.dumps({"validation_loss_before": before, **fingerprint}))
    say(f"validation loss {before:.3f}, perplexity {math.exp(before):.1f} (before)")

    remaining = steps - trainer.step
    seconds = trainer.seconds_per_step()
    say(
        f"training {remaining} steps of {per_step * block:,} tokens on {device}: "
        f"about {_duration(seconds * remaining)} ({seconds:.2f} s a step measured). "
        "Ctrl-C saves a checkpoint; --resume continues."
    )
    outcome = _train_with_bar(trainer, steps)
    if outcome.interrupted:
        say(
            f"stopped at step {outcome.step} of {steps}; checkpoint saved in "
            f"{out / 'checkpoints'}. Run the same command with --resume to continue."
        )
        return 130
    after = val_loss(model, blocks.validation, device)
    say(
        f"validation loss {after:.3f}, perplexity {math.exp(after):.1f} "
        f"(after; {before:.3f} before)"
    )
    report = {
        "base": str(base),
        "base_model_id": model_id_of(base),
        "data": str(args.data),
        "files": len(corpus.files),
        "texts": len(corpus.documents),
        "tokens": blocks.tokens,
        "train_blocks": len(blocks.train),
        "validation_blocks": len(blocks.validation),
        "block_size": block,
        "steps": steps,
        "epochs": round(steps * per_step / len(blocks.train), 3),
        "train_config": {k: v for k, v in fingerprint.items() if k in _CONFIG_KEYS},
        "validation_loss_before": before,
        "validation_loss_after": after,
        "perplexity_before": math.exp(before),
        "perplexity_after": math.exp(after),
        "last_train_loss": outcome.last_loss,
        "train_seconds": round(outcome.seconds, 1),
        "tokens_per_s": round(outcome.tokens_per_s, 1),
        "device": device,
        "torch": torch.__version__,
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    _write_model(model, tokenizer, out, report)
    if not args.keep_checkpoints:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    (out / STATE).unlink(missing_ok=True)
    say(f"model written to {out}")
    if not args.no_convert:
        _convert(out)
    return 0


_CONFIG_KEYS = ("lr", "batch_size", "grad_accum", "warmup_steps", "weight_decay", "seed")


def _fingerprint(base: Path, corpus: Corpus, blocks: Blocks, config: Any) -> dict[str, Any]:
    """What a checkpoint must agree with for --resume to continue the same run:
    the inputs and every training setting but where it runs and how often it saves."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("device", "checkpoint_every")}
    return {
        "base": str(base.resolve()),
        "data": corpus.fingerprint,
        "block_size": int(blocks.train.shape[1]),
        "train_blocks": len(blocks.train),
        **settings,
    }


def _check_same_run(checkpoint: Path, fingerprint: dict[str, Any]) -> None:
    saved = json.loads((checkpoint / "run.json").read_text())
    changed = sorted(key for key in fingerprint if saved.get(key) != fingerprint[key])
    if changed:
        raise FinetuneError(
            f"the checkpoint in {checkpoint.parent} was made with a different "
            f"{', '.join(changed)}: run with the same data and flags, or --overwrite to start over"
        )


def _check_out(out: Path, base: Path, *, resume: bool, overwrite: bool) -> bool:
    """Refuse an --out that holds something else; True when --overwrite must clear it."""
    from generation.finetune.train import latest_checkpoint

    if out.exists() and out.resolve() == base.resolve():
        raise FinetuneError(f"--out {out} is the base model folder: choose a new folder")
    if not out.exists():
        if resume:
            raise FinetuneError(f"nothing to resume: {out} does not exist")
        return False
    if not out.is_dir():
        raise FinetuneError(f"--out {out} is a file, not a folder")
    if resume:
        if latest_checkpoint(out) is None:
            raise FinetuneError(f"nothing to resume: {out} holds no checkpoint")
        return False
    if overwrite:
        return True
    if (out / "config.json").exists():
        raise FinetuneError(
            f"{out} already holds a model ({model_id_of(out)}): "
            "choose another --out, or --overwrite to replace it"
        )
    if latest_checkpoint(out) is not None:
        raise FinetuneError(
            f"{out} holds checkpoints of an unfinished run: --resume to continue it, "
            "or --overwrite to start over"
        )
    if any(out.iterdir()):
        raise FinetuneError(f"{out} is not empty: choose a new folder, or --overwrite")
    return False


def _device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise FinetuneError(f"--device {choice}: no CUDA GPU is available here")
    return choice


def _train_with_bar(trainer: Any, steps: int) -> Any:
    from tqdm import tqdm

    with tqdm(total=steps, initial=trainer.step, unit="step", dynamic_ncols=True) as bar:

        def on_step(step: int, loss: float, tokens_per_s: float) -> None:
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
            bar.update(step - bar.n)

        return trainer.run(on_step)


def _write_model(model: Any, tokenizer: Any, out: Path, report: dict[str, Any]) -> None:
    """Write the model next to `out` and move it in with config.json and the manifest
    last, so a folder cut short is never taken for a model (they are what
    loaders look for)."""
    staging = out / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    model.to("cpu").eval()
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / REPORT).write_text(json.dumps(report, indent=2), encoding="utf-8")
    manifest = {
        "model_id": out.name,
        "source": f"fine-tuned from {report['base_model_id']} by storybot's fine-tuning",
    }
    last = ["config.json", MANIFEST]
    for item in sorted(staging.iterdir()):
        if item.name not in last:
            os.replace(item, out / item.name)
    os.replace(staging / "config.json", out / "config.json")
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    shutil.rmtree(staging, ignore_errors=True)
    check_model_dir(out)


def _convert(out: Path) -> None:
    """Convert for the default (ONNX) backend now, not at the bot's first story."""
    try:
        from generation.onnx_backend import convert

        convert(out, "int8", progress=say)
    except Exception as error:  # the bot converts at first use: a warning, not a failure
        say(f"warning: ONNX conversion failed ({error}); the bot will convert at first use")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
