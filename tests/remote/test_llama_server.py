"""The llama.cpp dialect against a real `llama-server` serving the tiny model
(written as GGUF by tests/remote/gguf.py). Skipped where there is none: set
LLAMA_SERVER to the binary, or put `llama-server` on the PATH."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from generation.openai_backend import OpenAIBackend
from generation.types import GenerationParams, GenerationRequest
from tests.conftest import free_port
from tests.remote.conftest import remote_pool
from tests.remote.gguf import write_gpt2_gguf

BINARY = os.environ.get("LLAMA_SERVER") or shutil.which("llama-server")
pytestmark = pytest.mark.skipif(
    not BINARY, reason="no llama-server: set LLAMA_SERVER to one to run these"
)
PROMPT = "The detective walked into the harbour"
# llama.cpp's default DRY sequence breakers: a repeat does not reach across them.
BREAKERS = ("\n", ":", '"', "*")


class LlamaServer:
    def __init__(self, model: Path, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        self._log = log_path.open("w")
        assert BINARY is not None
        command = [BINARY, "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port)]
        # One slot of 512 tokens, one thread: small and quiet beside other work.
        command += ["-c", "512", "-np", "1", "-t", "1"]
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"llama-server exited:\n{self.log_path.read_text()}")
            try:  # 503 while the model loads, 200 once it is ready
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1):
                    return
            except (urllib.error.HTTPError, OSError):
                time.sleep(0.1)  # polling a child process's start-up
        raise AssertionError(f"llama-server did not start:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._log.close()


@pytest.fixture(scope="module")
def llama_server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaServer]:
    folder = tmp_path_factory.mktemp("llama")
    model = write_gpt2_gguf(tiny_model_dir, folder / "tiny-gpt2.gguf")
    server = LlamaServer(model, folder / "llama-server.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.kill()


async def greedy_text(
    server: LlamaServer, tiny_model_dir: Path, sampling_fields: str, **params: Any
) -> tuple[str, OpenAIBackend]:
    options = {"max_new_tokens": 40, "do_sample": False, "top_k": 0, "seed": 1} | params
    tokenizer = tiny_model_dir / "tokenizer.json"
    pool = remote_pool(server.url, tokenizer=tokenizer, sampling_fields=sampling_fields)
    async with pool:
        result = await pool.submit(GenerationRequest(PROMPT, GenerationParams(**options))).result()
        backend = pool.backend
        assert isinstance(backend, OpenAIBackend)
    return result.raw_text, backend


def repeated_trigrams(server_text: str, tiny_model_dir: Path, *, skip_breakers: bool) -> list[str]:
    """3-token sequences of the story that occur earlier in prompt + story."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    prompt = tokenizer.encode(PROMPT).ids
    ids = prompt + tokenizer.encode(server_text).ids
    pieces = [tokenizer.decode([i]) for i in ids]
    seen: set[tuple[int, ...]] = set()
    repeats = []
    for start in range(len(ids) - 2):
        gram = tuple(ids[start : start + 3])
        text = "".join(pieces[start : start + 3])
        breaks = skip_breakers and any(b in text for b in BREAKERS)
        if start + 2 >= len(prompt) and gram in seen and not breaks:
            repeats.append(text)
        seen.add(gram)
    return repeats


async def test_llama_server_is_recognised(llama_server: LlamaServer, tiny_model_dir: Path) -> None:
    text, backend = await greedy_text(llama_server, tiny_model_dir, "auto")
    assert (backend.sampling_fields, backend.engine) == ("llamacpp", "llama.cpp")
    assert backend.context_size == 512  # /props: the slot's context
    assert text


async def test_the_n_gram_ban_reaches_llama_cpp_only_under_its_own_names(
    llama_server: LlamaServer, tiny_model_dir: Path
) -> None:
    """The tiny model loops greedily. llama.cpp ignores `no_repeat_ngram_size`
    without a word (the text is the same as with no controls at all); its DRY
    sampler, as the llamacpp dialect asks for it, ends the loop."""
    asks = {"no_repeat_ngram_size": 3, "repetition_penalty": 1.0}
    plain, _ = await greedy_text(llama_server, tiny_model_dir, "none", **asks)
    generic, _ = await greedy_text(llama_server, tiny_model_dir, "extra", **asks)
    own, _ = await greedy_text(llama_server, tiny_model_dir, "llamacpp", **asks)
    assert repeated_trigrams(plain, tiny_model_dir, skip_breakers=True), plain
    assert generic == plain
    assert own != plain
    assert repeated_trigrams(own, tiny_model_dir, skip_breakers=True) == [], own


async def test_the_repetition_penalty_reaches_llama_cpp_only_as_repeat_penalty(
    llama_server: LlamaServer, tiny_model_dir: Path
) -> None:
    asks = {"no_repeat_ngram_size": 0, "repetition_penalty": 1.5}
    plain, _ = await greedy_text(llama_server, tiny_model_dir, "none", **asks)
    generic, _ = await greedy_text(llama_server, tiny_model_dir, "extra", **asks)
    own, _ = await greedy_text(llama_server, tiny_model_dir, "llamacpp", **asks)
    assert generic == plain  # `repetition_penalty` is not a name llama.cpp reads
    assert own != plain
