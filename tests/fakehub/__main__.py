"""Serve a model folder as a fake Hugging Face Hub until interrupted.

    python -m tests.fakehub --model-dir models/tiny-gpt2 [--repo gpt2] [--port 0]

The first line printed is the endpoint, `http://127.0.0.1:<port>`: point
`HF_ENDPOINT` at it (with `HF_HUB_DISABLE_TELEMETRY=1`) and `download_model.py`
or `scripts/run.sh` downloads the folder's files as if from the Hub. With
`--log`, every request is printed as it is answered. SIGTERM or Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from tests.fakehub.server import FakeHub


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="folder to serve")
    parser.add_argument("--repo", default="gpt2", help="repo id to serve it as (default gpt2)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    parser.add_argument("--log", action="store_true", help="print each request")
    args = parser.parse_args(argv)
    if not args.model_dir.is_dir():
        parser.error(f"--model-dir {args.model_dir} is not a folder")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FakeHub(args.model_dir, args.repo, host=args.host, port=args.port) as hub:
        print(hub.url, flush=True)
        printed = 0
        try:
            while not stop.wait(0.1 if args.log else None):
                for seen in hub.seen()[printed:]:
                    print(seen.status, seen.method, seen.path, seen.range or "", flush=True)
                    printed += 1
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
