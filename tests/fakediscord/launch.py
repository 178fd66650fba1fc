"""`python -m bot`, pointed at a fake Discord: for tests that run the bot as a
real process (and stop it with SIGTERM or SIGKILL).

    FAKE_DISCORD_URL=http://127.0.0.1:PORT python -m tests.fakediscord.launch

It only redirects discord.py's REST base and gateway, the two points the
in-process tests use; everything else is the real composition root.
"""

from __future__ import annotations

import os
import sys

import discord.gateway
import discord.http
import yarl

from app.runtime import main

if __name__ == "__main__":
    url = os.environ["FAKE_DISCORD_URL"]
    discord.http.Route.BASE = f"{url}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(
        url.replace("http", "ws", 1) + "/gateway"
    )
    sys.exit(main())
