"""`python -m bot`, pointed at a fake Discord: for tests that run the bot as a
real process (and stop it with SIGTERM or SIGKILL).

    FAKE_DISCORD_URL=http://127.0.0.1:PORT python -m tests.fakediscord.launch

It only redirects discord.py's REST base and gateway, the two points the
in-process tests use; everything else is the real composition root.
FAKE_STEP_S=0.02 makes each decoding step of a local model take that much
longer (a real model's pace), so a test can stop a process mid-story.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import discord.gateway
import discord.http
import yarl

from app.runtime import main


def slow_steps(seconds: float) -> None:
    import generation.decode_loop as decode

    loop = decode.run_decode_loop

    def slowed(
        model: Any,
        jobs: Any,
        admit: Any,
        max_batch: int,
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        def step(rows: int) -> None:
            time.sleep(seconds)
            if on_step is not None:
                on_step(rows)

        loop(model, jobs, admit, max_batch, step)

    decode.run_decode_loop = slowed


if __name__ == "__main__":
    url = os.environ["FAKE_DISCORD_URL"]
    discord.http.Route.BASE = f"{url}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(
        url.replace("http", "ws", 1) + "/gateway"
    )
    if os.environ.get("FAKE_STEP_S"):
        slow_steps(float(os.environ["FAKE_STEP_S"]))
    sys.exit(main())
