"""Fetch GPT-2 (or any causal LM) from the Hugging Face Hub, or build a tiny one.

    python download_model.py                       # gpt2 -> models/gpt2
    python download_model.py --model distilgpt2    # any causal LM id
    python download_model.py --revision <sha>      # pin a revision
    python download_model.py --tiny                # offline, seconds: models/tiny-gpt2

Only safetensors weights, the tokenizer, the config and the generation config
are fetched. A complete download (marked by storybot.json, written once the
model has loaded) is not fetched again. Without network it fails within
seconds with a message that says what to do.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

# Fail fast offline: the Hub client's defaults wait and retry for a long time.
os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")

from generation.errors import ModelLoadError
from generation.modelfiles import MANIFEST, check_model_dir, read_manifest

ALLOW_PATTERNS = [
    "*.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
]
TINY_DIR = Path("models/tiny-gpt2")
DOWNLOAD_CHUNK_SIZE = 256 * 1024  # bytes the Hub client reads between progress updates


class DownloadError(Exception):
    """One line for the user; the script exits non-zero."""


def is_complete(folder: Path, model: str, revision: str | None) -> bool:
    try:
        check_model_dir(folder)
    except ModelLoadError:
        return False
    manifest = read_manifest(folder)
    return manifest.get("model_id") == model and manifest.get("revision") == revision


def offline_hint() -> str:
    return (
        "check the network (or set HF_ENDPOINT / a proxy), or run "
        "`python download_model.py --tiny` to build a tiny offline model "
        "(its stories are nonsense, but everything runs)"
    )


def first_line(error: BaseException) -> str:
    """The Hub client's messages run over several lines (URL, docs link): keep one."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def http_refusal(error: Any) -> str:
    """One line for an `HfHubHTTPError`: which status, and what to do."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status is not None and status >= 500:
        return f"the Hugging Face Hub answered HTTP {status} (a server error): try again later"
    answered = f"HTTP {status}" if status is not None else "an error"
    return f"the Hugging Face Hub answered {answered} ({first_line(error)}): {offline_hint()}"


def fetch(model: str, revision: str | None, out: Path, force: bool) -> str:
    """Download the allowed files of `model` into `out`; return the commit fetched."""
    import httpx2  # huggingface_hub's HTTP client: its network errors are not OSErrors
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    # The client hands file bodies over in 10 MiB chunks: on a slow line the
    # progress bar stands still for seconds, and a connection cut off loses
    # up to a chunk, since a resume starts from the last whole one.
    constants.DOWNLOAD_CHUNK_SIZE = min(constants.DOWNLOAD_CHUNK_SIZE, DOWNLOAD_CHUNK_SIZE)
    try:
        # Resolve the revision first: its errors are the Hub's own (unknown,
        # gated, down) rather than snapshot_download's fallback to whatever
        # half-finished folder is on disk, and the commit goes in the manifest.
        info = HfApi().model_info(model, revision=revision, timeout=constants.HF_HUB_ETAG_TIMEOUT)
        if info.sha is None:
            raise DownloadError(f"the Hub did not say which commit {model!r} is at")
        if info.siblings is not None and not any(
            sibling.rfilename.endswith(".safetensors") for sibling in info.siblings
        ):
            raise DownloadError(
                f"model {model!r} has no safetensors weights; storybot loads only those"
            )
        snapshot_download(
            repo_id=model,
            revision=info.sha,  # a commit: the same files even if the branch moves meanwhile
            local_dir=str(out),
            allow_patterns=ALLOW_PATTERNS,
            force_download=force,
        )
    except GatedRepoError:  # a RepositoryNotFoundError too: test it first
        raise DownloadError(f"model {model!r} is gated: accept its terms and log in") from None
    except RepositoryNotFoundError:
        raise DownloadError(
            f"unknown model id {model!r} on the Hugging Face Hub (or it is private)"
        ) from None
    except RevisionNotFoundError:
        raise DownloadError(f"model {model!r} has no revision {revision!r}") from None
    except HfHubHTTPError as error:
        raise DownloadError(http_refusal(error)) from None
    except LocalEntryNotFoundError as error:  # the Hub failed after the revision resolved
        cause = error.__cause__
        if isinstance(cause, HfHubHTTPError):
            raise DownloadError(http_refusal(cause)) from None
        raise DownloadError(f"could not reach the Hugging Face Hub: {offline_hint()}") from None
    except (httpx2.TransportError, ConnectionError) as error:
        # Unreachable, timed out, or the connection kept dropping mid-file
        # (the client resumes a few times first).
        raise DownloadError(
            f"could not reach the Hugging Face Hub ({first_line(error)}): {offline_hint()}"
        ) from None
    except OSError as error:  # full disk, permissions, a size that does not match
        raise DownloadError(f"download failed: {first_line(error)}") from None
    return info.sha


def verify(out: Path) -> str:
    """Load the folder through the app's own path, then convert it for the fast
    backend (ONNX Runtime), so the first start-up does not have to."""
    from generation.onnx_backend import convert
    from generation.torch_backend import TransformersBackend

    backend = TransformersBackend(out, max_batch_size=1)
    ids = backend.encode("Once upon a time")
    convert(out, "int8", progress=print)
    return f"{len(backend.tokenizer)} tokens in the vocabulary, prompt -> {len(ids)} ids"


def download(model: str, revision: str | None, out: Path, force: bool) -> None:
    if not force and is_complete(out, model, revision):
        print(f"{model} is already in {out}; nothing to do (--force fetches it again)")
        return
    print(f"downloading {model}{'@' + revision if revision else ''} into {out} ...", flush=True)
    started = time.monotonic()
    # From the first file replaced, an old manifest would vouch for a folder
    # that a fetch cut short leaves half old, half new.
    (out / MANIFEST).unlink(missing_ok=True)
    commit = fetch(model, revision, out, force)
    try:
        check_model_dir(out)
        summary = verify(out)
    except ModelLoadError as error:
        raise DownloadError(str(error)) from None
    manifest = {
        "model_id": model,
        "revision": revision,
        "commit": commit,
        "downloaded_at": time.time(),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    print(f"ok: {model} loads ({summary}), {time.monotonic() - started:.0f} s")


def build_tiny(out: Path, steps: int) -> None:
    from generation.tiny import build_tiny_model

    print(f"building a tiny GPT-2 into {out} (offline) ...", flush=True)
    started = time.monotonic()
    build_tiny_model(out, train_steps=steps)
    summary = verify(out)
    print(f"ok: tiny model in {out} ({summary}), {time.monotonic() - started:.1f} s")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gpt2", help="Hub id of a causal LM (default gpt2)")
    parser.add_argument("--revision", default=None, help="branch, tag or commit to pin")
    parser.add_argument("--out", type=Path, default=None, help="folder (default models/<name>)")
    parser.add_argument("--force", action="store_true", help="fetch again even if complete")
    parser.add_argument("--tiny", action="store_true", help="build the tiny offline test model")
    parser.add_argument(
        "--tiny-steps",
        type=int,
        default=150,
        help="training steps for the tiny model (0: random weights)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        if args.tiny:
            build_tiny(args.out or TINY_DIR, args.tiny_steps)
        else:
            out = args.out or Path("models") / args.model.rstrip("/").split("/")[-1]
            download(args.model, args.revision, out, args.force)
    except DownloadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
