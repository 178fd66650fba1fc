"""A tiny GPT-2, built offline in seconds, for tests and machines without the Hub.

It has GPT-2's architecture and file layout (config.json, model.safetensors,
tokenizer.json with a byte-level BPE trained here with `tokenizers`), so it is
loaded by exactly the code that loads the real model. With random weights its
stories are nonsense; `train_steps` teaches it the built-in corpus a little.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from generation.modelfiles import MANIFEST

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"

_NAMES = ["Mara", "Tom", "the detective", "the captain", "Elena", "the old king", "Jun", "Ada"]
_PLACES = ["the harbour", "the station", "the castle", "the forest", "the city", "the ship"]
_VERBS = ["walked into", "looked at", "ran from", "waited by", "remembered", "searched"]
_THINGS = ["a letter", "the knife", "a red door", "the storm", "an old map", "the key"]
_ENDINGS = [
    "and nobody spoke.",
    "while the rain fell.",
    "before the night was over.",
    "as if it knew the truth.",
    "and the story began.",
]


def corpus(sentences: int = 2000, seed: int = 0) -> Iterator[str]:
    """Deterministic English-like sentences, a little varied, for training."""
    rng = random.Random(seed)
    for _ in range(sentences):
        who, where = rng.choice(_NAMES), rng.choice(_PLACES)
        sentence = (
            f"{who.capitalize() if who[0].islower() else who} {rng.choice(_VERBS)} "
            f"{rng.choice(_THINGS)} near {where} {rng.choice(_ENDINGS)}"
        )
        if rng.random() < 0.2:
            sentence += f' "Why?" asked {rng.choice(_NAMES)}.'
        yield sentence


def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast  # type: ignore[attr-defined]  # lazy export

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = GPT2TokenizerFast(
        tokenizer_object=tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS
    )
    # transformers 5 can silently build a one-token tokenizer from bad arguments.
    if len(fast) < 257:
        raise RuntimeError(f"tokenizer came out with {len(fast)} tokens")
    return fast


def build_tiny_model(
    out_dir: Path,
    *,
    vocab_size: int = 1024,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 2,
    n_positions: int = 1024,
    seed: int = 0,
    train_steps: int = 0,
) -> Path:
    """Build the tiny model into `out_dir` atomically (a temp folder, then rename)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    texts = list(corpus())
    tokenizer = train_tokenizer(texts, vocab_size)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    if train_steps:
        _train(model, tokenizer, texts, train_steps, seed)
    model.eval()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        model.generation_config.pad_token_id = tokenizer.eos_token_id
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        manifest = {
            "model_id": "tiny-gpt2",
            "source": "built locally by download_model.py --tiny",
            "train_steps": train_steps,
            "seed": seed,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _train(model: Any, tokenizer: Any, texts: list[str], steps: int, seed: int) -> None:
    import torch

    ids: list[int] = []
    for index, text in enumerate(texts):  # paragraphs of eight sentences
        ids += tokenizer.encode(text + " ")
        if index % 8 == 7:
            ids.append(tokenizer.eos_token_id)
    data = torch.tensor(ids, dtype=torch.long)
    block, batch = 64, 16
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        starts = torch.randint(0, len(data) - block - 1, (batch,), generator=generator)
        x = torch.stack([data[s : s + block] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == steps - 1:
            log.info("tiny model training step %d/%d loss %.3f", step + 1, steps, loss.item())
