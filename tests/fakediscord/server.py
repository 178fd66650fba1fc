"""A fake Discord on loopback that speaks the real protocol.

The bot under test runs the real discord.py client: its HTTP client talks to
the REST routes below and its gateway client to the websocket, redirected by
the two documented points (`discord.http.Route.BASE` and
`discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`). Everything the bot sends
is recorded with its JSON body; what Discord would echo (the bot's own
messages and reactions) is echoed over the gateway, so tests prove the bot
ignores itself. Faults (429, 5xx, error codes, a dropped gateway) can be
injected per route.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

DISCORD_EPOCH_MS = 1420070400000
JSON = "application/json"  # exactly: discord.py refuses "application/json; charset=utf-8"
ALL_PERMISSIONS = str((1 << 50) - 1)
ADD_REACTIONS = 1 << 6
MANAGE_GUILD = 1 << 5
# What an ordinary member may do (the @everyone role): see, write, react, use
# commands. Admins get every permission, Manage Server included.
MEMBER_PERMISSIONS = (
    (1 << 10)  # view channel
    | (1 << 11)  # send messages
    | (1 << 14)  # embed links
    | (1 << 15)  # attach files
    | (1 << 16)  # read message history
    | ADD_REACTIONS
    | (1 << 31)  # use application commands
)

IDS = re.compile(r"/(\d{5,}|itoken-\d+)")  # ids and interaction tokens in a path
_increment = itertools.count()
BODY = web.RequestKey("json", object)  # the parsed JSON body (or multipart payload_json)
FILES = web.RequestKey("files", list)  # names of the files of a multipart request


def snowflake(shard: tuple[int, int] | None = None) -> str:
    """A string snowflake that encodes the current time, as Discord's do; with
    `shard` (id, count), a guild id on that shard: (id >> 22) % count == shard id."""
    ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
    if shard is not None:
        shard_id, count = shard
        ms -= (ms - shard_id) % count
    return str((ms << 22) | (1 << 17) | (next(_increment) % 4096))


def shard_of(guild_id: str | int, shard_count: int) -> int:
    """Which shard a guild's events go to (Discord's formula)."""
    return (int(guild_id) >> 22) % shard_count


def iso_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def respond(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # Real Discord answers through a proxy; discord.py reads a 429 without `Via`
    # as a Cloudflare ban rather than a rate limit.
    headers = {"Via": "1.1 google", **(headers or {})}
    if status == 204:
        return web.Response(status=204, headers=headers)
    body = json.dumps(data)
    return web.Response(
        status=status, body=body.encode(), headers={"Content-Type": JSON, **headers}
    )


@dataclass
class User:
    id: str
    username: str
    bot: bool = False
    admin: bool = False  # has Manage Server (the bot itself has every permission)
    roles: list[str] = field(default_factory=list)  # role ids, besides @everyone
    locale: str = "en-US"  # the language of their Discord client (interactions carry it)

    def payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "global_name": self.username.title(),
            "discriminator": "0",
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


@dataclass
class Recorded:
    method: str
    path: str  # without the /api/v10 prefix
    json: Any
    files: list[str] = field(default_factory=list)
    at: float = field(default_factory=time.monotonic)


@dataclass
class Session:
    """One gateway connection: the shard it identified for, and its own sequence."""

    ws: web.WebSocketResponse
    shard: tuple[int, int] = (0, 1)
    session_id: str = ""
    sequence: int = 0
    ready: bool = False  # identified (or resumed) and not dropped since

    def owns(self, guild_id: str | int | None) -> bool:
        """Whether this connection gets the guild's events (all, without a guild)."""
        return guild_id is None or shard_of(guild_id, self.shard[1]) == self.shard[0]


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: dict[str, Any]
    times: int
    headers: dict[str, str] = field(default_factory=dict)
    when: Callable[[Any], bool] | None = None  # only requests whose JSON body matches
    fired: int = 0  # how many requests it answered

    def describe(self) -> str:
        return f"{self.method} {self.pattern.pattern} -> {self.status}"


def speaks(request: Recorded) -> dict[str, Any] | None:
    """The message body of a request by which the bot posts or edits a message
    (in a channel, as a followup, or as an interaction's answer), else None."""
    if request.method not in ("POST", "PATCH") or not isinstance(request.json, dict):
        return None
    if request.path.endswith("/callback"):
        if request.json.get("type") not in (4, 7):  # a deferral says nothing
            return None
        data = request.json.get("data")
        return data if isinstance(data, dict) else {}
    if re.fullmatch(r"/channels/\d+/messages(/\d+)?", request.path):
        return request.json
    if re.fullmatch(r"/webhooks/\d+/[^/]+(/messages/[^/]+)?", request.path):
        return request.json
    return None


class FakeDiscordServer:
    """The state and routes of one fake Discord: one guild, and more on demand
    (`add_guild`), over as many gateway connections as the bot opens."""

    def __init__(self) -> None:
        self.application_id = snowflake()
        self.bot_user = User(snowflake(), "storybot", bot=True)
        self.guild_id = snowflake()  # the first guild, where tests act by default
        self.guilds: dict[str, str] = {self.guild_id: "Story Club"}  # id -> name
        self.channels: dict[str, dict[str, Any]] = {}
        for name, nsfw in (("general", False), ("stories", False), ("after-dark", True)):
            self.add_channel(self.guild_id, name, nsfw=nsfw)
        self.users: dict[str, User] = {self.bot_user.id: self.bot_user}
        self.other_bot = self.add_user("otherbot", bot=True)
        self.bot_permissions = int(ALL_PERMISSIONS)
        self.guild_locale = "en-US"  # the server's language (FakeDiscord.set_guild_locale)
        self.roles: dict[str, dict[str, Any]] = {}
        self.admin_role = self.add_role("Admins", int(ALL_PERMISSIONS))
        self.bot_role = self.add_role("storybot", int(ALL_PERMISSIONS))
        self.messages: dict[str, dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        self.commands: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.interactions: dict[str, dict[str, Any]] = {}  # token -> state
        # GET /gateway/bot's recommended shard count (AutoShardedClient uses it).
        self.recommended_shards = 1
        self.max_concurrency = 1  # shards that may IDENTIFY in one 5-second slot
        self.sessions: list[Session] = []  # open gateway connections, newest last
        self._identified: dict[str, Session] = {}  # session id -> its connection, to resume
        self.identifies = 0
        self.resumes = 0
        self.connected = asyncio.Event()
        self.changed = asyncio.Condition()
        self.url = ""
        # Discord's global rate limit (requests a second over all routes but the
        # interaction ones); None: none. Each 429 the fake answers is kept.
        self.global_limit: float | None = None
        self._recent: collections.deque[float] = collections.deque()
        self.rate_limited: list[Recorded] = []

    # ----------------------------------------------------------------- world
    def add_user(self, name: str, bot: bool = False) -> User:
        user = User(snowflake(), name, bot=bot)
        self.users[user.id] = user
        return user

    def channel(self, name: str) -> dict[str, Any]:
        return next(c for c in self.channels.values() if c["name"] == name)

    def add_channel(self, guild_id: str, name: str, *, nsfw: bool = False) -> dict[str, Any]:
        if any(c["name"] == name for c in self.channels.values()):
            raise ValueError(f"a channel is named {name!r} already: tests find channels by name")
        channel_id = snowflake()
        self.channels[channel_id] = channel = {
            "id": channel_id,
            "type": 0,
            "name": name,
            "guild_id": guild_id,
            "position": sum(c["guild_id"] == guild_id for c in self.channels.values()),
            "permission_overwrites": [],
            "nsfw": nsfw,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "parent_id": None,
        }
        return channel

    def add_guild(
        self, name: str, channels: tuple[str, ...], *, shard: tuple[int, int] | None = None
    ) -> str:
        """Another guild the bot is in (before it connects), with channels of
        these names (unique over the fake); `shard`: (id, count) it falls on.
        Its members and roles are the first guild's."""
        guild_id = snowflake(shard)
        self.guilds[guild_id] = name
        for channel in channels:
            self.add_channel(guild_id, channel)
        return guild_id

    def guild_of(self, channel_id: str) -> str:
        return str(self.channels[channel_id]["guild_id"])

    def permissions_of(self, user: User) -> int:
        if user.id == self.bot_user.id:
            return self.bot_permissions
        return int(ALL_PERMISSIONS) if user.admin else MEMBER_PERMISSIONS

    def add_role(self, name: str, permissions: int = 0) -> str:
        role_id = snowflake()
        self.roles[role_id] = {
            "id": role_id,
            "name": name,
            "permissions": str(permissions),
            "position": len(self.roles) + 1,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": True,
            "flags": 0,
        }
        return role_id

    def member(self, user: User) -> dict[str, Any]:
        roles = list(user.roles)
        if user.admin:
            roles.append(self.admin_role)
        if user.id == self.bot_user.id:
            roles.append(self.bot_role)
        return {
            "user": user.payload(),
            "roles": roles,
            "joined_at": iso_now(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "nick": None,
            "avatar": None,
            "pending": False,
            "permissions": str(self.permissions_of(user)),  # in interactions: resolved
        }

    def guild_payload(self, guild_id: str | None = None) -> dict[str, Any]:
        guild_id = guild_id or self.guild_id
        everyone = {
            "id": guild_id,
            "name": "@everyone",
            "permissions": str(MEMBER_PERMISSIONS),
            "position": 0,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }
        members = [self.member(u) for u in self.users.values()]
        return {
            "id": guild_id,
            "name": self.guilds[guild_id],
            "icon": None,
            "owner_id": self.bot_user.id,
            "roles": [everyone, *self.roles.values()],
            "channels": [c for c in self.channels.values() if c["guild_id"] == guild_id],
            "members": members,
            "member_count": len(members),
            "large": False,
            "features": [],
            "emojis": [],
            "stickers": [],
            "voice_states": [],
            "presences": [],
            "threads": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "unavailable": False,
            "premium_tier": 0,
            "mfa_level": 0,
            "verification_level": 0,
            "nsfw_level": 0,
            "explicit_content_filter": 0,
            "default_message_notifications": 0,
            "system_channel_id": None,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "preferred_locale": self.guild_locale,
            "joined_at": iso_now(),
            "premium_subscription_count": 0,
            "application_id": None,
            "description": None,
            "banner": None,
            "splash": None,
            "discovery_splash": None,
            "vanity_url_code": None,
            "max_members": 500000,
        }

    # -------------------------------------------------------------- recording
    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_until(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Wait for a condition: re-checked at each change the fake sees, and every
        20 ms for conditions on the bot's own state."""

        async def loop() -> Any:
            async with self.changed:
                while True:
                    value = predicate()
                    if value:
                        return value
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.changed.wait(), 0.02)

        return await asyncio.wait_for(loop(), timeout)

    def inject(
        self,
        method: str,
        path_regex: str,
        status: int,
        body: dict[str, Any] | None = None,
        times: int = 1,
        headers: dict[str, str] | None = None,
        when: Callable[[Any], bool] | None = None,
    ) -> None:
        """Answer the next `times` matching requests (whose JSON body satisfies
        `when`, if given) with this error instead."""
        self.faults.append(
            Fault(
                method.upper(),
                re.compile(path_regex),
                status,
                body or {"message": "injected", "code": 0},
                times,
                headers or {},
                when,
            )
        )

    def _fault_for(self, method: str, path: str, body: Any) -> Fault | None:
        for fault in self.faults:
            if (
                fault.times > 0
                and fault.method == method
                and fault.pattern.search(path)
                and (fault.when is None or fault.when(body))
            ):
                fault.times -= 1
                fault.fired += 1
                return fault
        return None

    def problems(self) -> list[str]:
        """What a test must not leave behind: a message the bot posted or edited
        without `allowed_mentions` that parse nothing (it could have pinged), and
        an injected fault that never fired (its test proved nothing)."""
        found = []
        for request in self.requests:
            body = speaks(request)
            if body is not None and body.get("allowed_mentions") != {"parse": []}:
                found.append(
                    f"{request.method} {request.path} could ping: allowed_mentions="
                    f"{body.get('allowed_mentions')!r}"
                )
        found += [f"injected fault never fired: {f.describe()}" for f in self.faults if not f.fired]
        return found

    # ---------------------------------------------------------------- gateway
    @property
    def ws(self) -> web.WebSocketResponse | None:
        """The newest gateway connection (the only one, unless the bot shards)."""
        return self.sessions[-1].ws if self.sessions else None

    def live_sessions(self) -> list[Session]:
        return [s for s in self.sessions if s.ready and not s.ws.closed]

    async def dispatch(
        self, event: str, data: dict[str, Any], *, to: Session | None = None
    ) -> None:
        """Send an event to every connection of the shard its guild is on (as
        Discord does, to each session of that shard), or only `to`."""
        live = self.live_sessions()
        if not live:
            raise RuntimeError("the bot is not connected to the gateway")
        guild = data.get("guild_id") or (data.get("id") if event.startswith("GUILD_") else None)
        targets = [to] if to is not None else [s for s in live if s.owns(guild)]
        for session in targets:
            await self._send(session, event, data)

    async def _send(self, session: Session, event: str, data: dict[str, Any]) -> None:
        session.sequence += 1
        await session.ws.send_str(
            json.dumps({"op": 0, "t": event, "s": session.sequence, "d": data})
        )

    async def gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        session = Session(ws)
        self.sessions.append(session)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 45000}}))
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                payload = json.loads(message.data)
                op = payload.get("op")
                if op == 1:
                    await ws.send_str(json.dumps({"op": 11}))
                elif op == 2:
                    await self._identify(session, payload.get("d") or {})
                elif op == 6:
                    await self._resume(session, payload.get("d") or {})
        finally:
            session.ready = False
            self.sessions.remove(session)
        return ws

    async def _identify(self, session: Session, data: dict[str, Any]) -> None:
        shard = data.get("shard")
        shard_id, count = shard if shard else (0, 1)
        if not 0 <= shard_id < count:
            await session.ws.close(code=4010, message=b"Invalid shard")
            return
        self.identifies += 1
        session.shard = (shard_id, count)
        session.session_id = snowflake()
        self._identified[session.session_id] = session
        session.ready = True
        guilds = [guild for guild in self.guilds if session.owns(guild)]
        ready = {
            "v": 10,
            "user": self.bot_user.payload(),
            "session_id": session.session_id,
            "resume_gateway_url": self.url.replace("http", "ws", 1) + "/gateway",
            "guilds": [{"id": guild, "unavailable": True} for guild in guilds],
            "application": {"id": self.application_id, "flags": 0},
            "private_channels": [],
            "relationships": [],
        }
        if shard:
            ready["shard"] = [shard_id, count]
        await self._send(session, "READY", ready)
        for guild in guilds:
            await self._send(session, "GUILD_CREATE", self.guild_payload(guild))
        self.connected.set()
        await self._notify()

    async def _resume(self, session: Session, data: dict[str, Any]) -> None:
        self.resumes += 1
        old = self._identified.get(str(data.get("session_id")))
        if old is not None:
            session.shard, session.sequence = old.shard, old.sequence
        session.session_id = str(data.get("session_id") or snowflake())
        self._identified[session.session_id] = session
        session.ready = True
        await self._send(session, "RESUMED", {})
        self.connected.set()
        await self._notify()

    async def drop_gateway(self) -> None:
        """Close every gateway connection as a network fault would (the client
        must resume)."""
        self.connected.clear()
        for session in list(self.sessions):
            session.ready = False
            await session.ws.close(code=4000, message=b"dropped by the test")

    # ------------------------------------------------------------------ REST
    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/gateway":
            return await handler(request)
        path = request.path.removeprefix("/api/v10")
        body: Any = None
        files: list[str] = []
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":  # type: ignore[union-attr]
                    body = json.loads(await part.text())  # type: ignore[union-attr]
                else:
                    files.append(part.filename or "")  # type: ignore[union-attr]
                    await part.read()  # type: ignore[union-attr]
        elif request.can_read_body:
            raw = await request.read()
            body = json.loads(raw) if raw else None
        request[BODY] = body
        request[FILES] = files
        recorded = Recorded(request.method, path, body, files)
        self.requests.append(recorded)
        retry_after = self._over_global_limit(path)
        if retry_after is not None:
            self.rate_limited.append(recorded)
            await self._notify()
            limited = {"message": "You are being rate limited.", "global": True}
            return respond(
                {**limited, "retry_after": retry_after},
                429,
                {
                    "Retry-After": str(max(1, round(retry_after))),
                    "X-RateLimit-Global": "true",
                    "X-RateLimit-Scope": "global",
                },
            )
        fault = self._fault_for(request.method, path, body)
        if fault is not None:
            if fault.status == 429:
                self.rate_limited.append(recorded)
            await self._notify()
            return respond(fault.body, fault.status, fault.headers)
        try:
            return await handler(request)
        finally:
            await self._notify()

    def _over_global_limit(self, path: str) -> float | None:
        """With `global_limit` set: None if this request fits in the last
        second's allowance (and counts against it), else the seconds until it
        would. Interaction responses and followups are exempt, as on Discord."""
        if self.global_limit is None or path.startswith(("/interactions/", "/webhooks/")):
            return None
        now = time.monotonic()
        while self._recent and self._recent[0] <= now - 1.0:
            self._recent.popleft()
        if len(self._recent) >= self.global_limit:
            return round(self._recent[0] + 1.0 - now, 3) or 0.001
        self._recent.append(now)
        return None

    def requests_per_message(self) -> dict[str, int]:
        """Message id -> the REST requests that touched it (its post, edits,
        reactions, deletion), for counting what each message costs."""
        counts: dict[str, int] = {}
        for request in self.requests:
            found = re.search(r"/channels/\d+/messages/(\d+)", request.path)
            if found:
                counts[found.group(1)] = counts.get(found.group(1), 0) + 1
        for message_id, message in self.messages.items():
            if "interaction_token" not in message and message["author"]["id"] == self.bot_user.id:
                counts[message_id] = counts.get(message_id, 0) + 1  # the POST that made it
        return counts

    def requests_per_route(self) -> dict[str, int]:
        """'METHOD /route' (ids as {id}) -> how many requests the fake received."""
        counts: dict[str, int] = {}
        for request in self.requests:
            route = request.method + " " + IDS.sub("/{id}", request.path)
            counts[route] = counts.get(route, 0) + 1
        return counts

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.middleware])
        r = app.router
        api = "/api/v10"
        r.add_get("/gateway", self.gateway)
        r.add_get(api + "/users/@me", self.me)
        r.add_get(api + "/oauth2/applications/@me", self.application_info)
        r.add_get(api + "/gateway/bot", self.gateway_bot)
        r.add_put(api + "/applications/{app}/commands", self.sync_commands)
        r.add_put(api + "/applications/{app}/guilds/{guild}/commands", self.sync_commands)
        r.add_get(api + "/applications/{app}/commands", self.list_commands)
        r.add_post(api + "/interactions/{iid}/{token}/callback", self.interaction_callback)
        r.add_route("*", api + "/webhooks/{app}/{token}/messages/{mid}", self.webhook_message)
        r.add_post(api + "/webhooks/{app}/{token}", self.followup)
        r.add_get(api + "/channels/{cid}", self.get_channel)
        r.add_post(api + "/channels/{cid}/messages", self.create_message)
        r.add_route("*", api + "/channels/{cid}/messages/{mid}", self.message_route)
        r.add_put(api + "/channels/{cid}/messages/{mid}/reactions/{emoji}/@me", self.add_reaction)
        r.add_delete(
            api + "/channels/{cid}/messages/{mid}/reactions/{emoji}/{user}", self.remove_reaction
        )
        return app

    async def me(self, request: web.Request) -> web.Response:
        return respond(self.bot_user.payload())

    async def list_commands(self, request: web.Request) -> web.Response:
        return respond(self.commands)

    async def no_content(self, request: web.Request) -> web.Response:
        return respond(None, 204)

    async def application_info(self, request: web.Request) -> web.Response:
        return respond(
            {
                "id": self.application_id,
                "name": "storybot",
                "icon": None,
                "description": "",
                "rpc_origins": [],
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": self.users[next(iter(self.users))].payload(),
                "summary": "",
                "verify_key": "0" * 64,
                "flags": 0,
                "team": None,
                "tags": [],
                "interactions_endpoint_url": None,
                "redirect_uris": [],
            }
        )

    async def gateway_bot(self, request: web.Request) -> web.Response:
        return respond(
            {
                "url": self.url.replace("http", "ws", 1) + "/gateway",
                "shards": self.recommended_shards,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 1000,
                    "reset_after": 0,
                    "max_concurrency": self.max_concurrency,
                },
            }
        )

    async def sync_commands(self, request: web.Request) -> web.Response:
        commands = []
        for command in request[BODY]:
            commands.append(
                {
                    **command,
                    "id": snowflake(),
                    "application_id": self.application_id,
                    "version": snowflake(),
                    # As Discord keeps it: who may see and use the command.
                    "default_member_permissions": command.get("default_member_permissions"),
                    "type": command.get("type", 1),
                }
            )
        self.commands = commands
        return respond(commands)

    # -------------------------------------------------------------- messages
    def make_message(
        self,
        channel_id: str,
        body: dict[str, Any],
        author: User,
        files: list[str] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        message_id = snowflake()
        reference = body.get("message_reference")
        message = {
            "id": message_id,
            "channel_id": channel_id,
            "guild_id": self.guild_of(channel_id),
            "author": author.payload(),
            "content": body.get("content") or "",
            "timestamp": iso_now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [
                {
                    "id": snowflake(),
                    "filename": name,
                    "size": 1,
                    "url": "https://x/y",
                    "proxy_url": "https://x/y",
                }
                for name in files or []
            ],
            "embeds": body.get("embeds") or [],
            "pinned": False,
            "type": 19 if reference else 0,
            "flags": body.get("flags", 0) or 0,
            "components": body.get("components") or [],
            "allowed_mentions": body.get("allowed_mentions"),
            "first_content": body.get("content") or "",
            **extra,
        }
        if reference:
            message["message_reference"] = {
                **reference,
                "message_id": str(reference["message_id"]),
                "channel_id": channel_id,
                "guild_id": self.guild_of(channel_id),
            }
        self.messages[message_id] = message
        return message

    def _public(self, message: dict[str, Any]) -> dict[str, Any]:
        return {
            k: v
            for k, v in message.items()
            if k
            not in (
                "allowed_mentions",
                "first_content",
                "deleted",
                "edits",
                "interaction_token",
                "reactions_by",
                "user_reactions",
                "reactions_removed",
            )
        }

    async def create_message(self, request: web.Request) -> web.Response:
        channel_id = request.match_info["cid"]
        if channel_id not in self.channels:
            return respond({"message": "Unknown Channel", "code": 10003}, 404)
        body = request[BODY] or {}
        reference = body.get("message_reference")
        if reference and not self._live(reference.get("message_id")):
            if reference.get("fail_if_not_exists", True):
                return respond({"message": "Invalid Form Body", "code": 50035}, 400)
            body = {**body, "message_reference": None}
        message = self.make_message(channel_id, body, self.bot_user, request[FILES])
        await self.dispatch(
            "MESSAGE_CREATE", {**self._public(message), "member": self.member(self.bot_user)}
        )
        return respond(self._public(message))

    def _live(self, message_id: str | int | None) -> dict[str, Any] | None:
        message = self.messages.get(str(message_id or ""))
        return message if message and not message.get("deleted") else None

    def delete_channel(self, name: str) -> None:
        """The channel is deleted: requests to it answer 10003 Unknown Channel."""
        channel = self.channel(name)
        del self.channels[channel["id"]]

    async def message_route(self, request: web.Request) -> web.Response:
        if request.match_info["cid"] not in self.channels:
            return respond({"message": "Unknown Channel", "code": 10003}, 404)
        message = self._live(request.match_info["mid"])
        if message is None:
            return respond({"message": "Unknown Message", "code": 10008}, 404)
        if request.method == "GET":
            return respond(self._public(message))
        if request.method == "DELETE":
            message["deleted"] = True
            await self.dispatch(
                "MESSAGE_DELETE",
                {
                    "id": message["id"],
                    "channel_id": message["channel_id"],
                    "guild_id": message["guild_id"],
                },
            )
            return respond(None, 204)
        if request.method == "PATCH":
            self._edit(message, request[BODY] or {}, request[FILES])
            await self.dispatch("MESSAGE_UPDATE", self._public(message))
            return respond(self._public(message))
        return respond({"message": "405: Method Not Allowed", "code": 0}, 405)

    def _edit(self, message: dict[str, Any], body: dict[str, Any], files: list[str]) -> None:
        message.setdefault("edits", []).append(body)
        for key in ("content", "embeds", "components", "flags", "allowed_mentions"):
            if key in body:
                message[key] = (
                    body[key] if body[key] is not None else ([] if key != "content" else "")
                )
        if files:
            message["attachments"] = [
                {
                    "id": snowflake(),
                    "filename": n,
                    "size": 1,
                    "url": "https://x/y",
                    "proxy_url": "https://x/y",
                }
                for n in files
            ]
        message["edited_timestamp"] = iso_now()

    async def add_reaction(self, request: web.Request) -> web.Response:
        message = self._live(request.match_info["mid"])
        if message is None:
            return respond({"message": "Unknown Message", "code": 10008}, 404)
        if not self.bot_permissions & ADD_REACTIONS:
            return respond({"message": "Missing Permissions", "code": 50013}, 403)
        emoji = request.match_info["emoji"]
        message.setdefault("reactions_by", []).append((self.bot_user.id, emoji))
        await self.dispatch(
            "MESSAGE_REACTION_ADD", self.reaction_payload(message, self.bot_user, emoji)
        )
        return respond(None, 204)

    async def remove_reaction(self, request: web.Request) -> web.Response:
        message = self._live(request.match_info["mid"])
        if message is None:
            return respond({"message": "Unknown Message", "code": 10008}, 404)
        user = request.match_info["user"]
        user_id = self.bot_user.id if user == "@me" else user
        emoji = request.match_info["emoji"]
        message.setdefault("reactions_removed", []).append((user_id, emoji))
        for key in ("reactions_by", "user_reactions"):
            if key in message:
                message[key] = [pair for pair in message[key] if pair != (user_id, emoji)]
        return respond(None, 204)

    def reaction_payload(self, message: dict[str, Any], user: User, emoji: str) -> dict[str, Any]:
        return {
            "user_id": user.id,
            "channel_id": message["channel_id"],
            "message_id": message["id"],
            "guild_id": message["guild_id"],
            "member": self.member(user),
            "emoji": {"id": None, "name": emoji},
            "type": 0,
            "burst": False,
            "burst_colors": [],
            "message_author_id": message["author"]["id"],
        }

    async def get_channel(self, request: web.Request) -> web.Response:
        channel = self.channels.get(request.match_info["cid"])
        if channel is None:
            return respond({"message": "Unknown Channel", "code": 10003}, 404)
        return respond(channel)

    # ----------------------------------------------------------- interactions
    def interaction(self, token: str) -> dict[str, Any] | None:
        return self.interactions.get(token)

    async def interaction_callback(self, request: web.Request) -> web.Response:
        state = self.interactions.get(request.match_info["token"])
        if state is None or state["id"] != request.match_info["iid"]:
            return respond({"message": "Unknown interaction", "code": 10062}, 404)
        if state["responded"]:
            return respond(
                {"message": "Interaction has already been acknowledged.", "code": 40060}, 400
            )
        body = request[BODY] or {}
        state["responded"] = body.get("type")
        data = body.get("data") or {}
        if body.get("type") == 8:  # autocomplete suggestions
            state["choices"] = data.get("choices", [])
            return respond({"interaction": {"id": state["id"], "type": state["type"]}})
        if body.get("type") == 9:  # a modal, shown to the member who clicked
            state["modal"] = data
            return respond({"interaction": {"id": state["id"], "type": state["type"]}})
        ephemeral = bool((data.get("flags") or 0) & 64)
        kind = body.get("type")
        message = None
        if kind in (4, 5):  # a message (or "thinking") becomes the original response
            message = self.make_message(
                state["channel_id"],
                data,
                self.bot_user,
                request[FILES],
                interaction_token=state["token"],
            )
            if kind == 5:
                message["flags"] = (message["flags"] or 0) | 128  # loading
            state["original"] = message["id"]
            state["ephemeral"] = ephemeral
        elif kind == 7 and state.get("message_id"):  # update the clicked message
            target = self._live(state["message_id"])
            if target is not None:
                self._edit(target, data, request[FILES])
                message = target
        answer: dict[str, Any] = {
            "interaction": {
                "id": state["id"],
                "type": state["type"],
                "response_message_id": message and message["id"],
                "response_message_loading": kind == 5,
                "response_message_ephemeral": ephemeral,
            }
        }
        if message is not None:
            answer["resource"] = {"type": kind, "message": self._public(message)}
        return respond(answer)

    async def webhook_message(self, request: web.Request) -> web.Response:
        state = self.interactions.get(request.match_info["token"])
        if state is None or state.get("expired"):
            return respond({"message": "Invalid Webhook Token", "code": 50027}, 401)
        mid = request.match_info["mid"]
        if mid == "@original":
            mid = state.get("original") or ""
        message = self._live(mid)
        if message is None:
            return respond({"message": "Unknown Message", "code": 10008}, 404)
        if request.method == "PATCH":
            self._edit(message, request[BODY] or {}, request[FILES])
            message["flags"] = (message.get("flags") or 0) & ~128
            return respond(self._public(message))
        if request.method == "DELETE":
            message["deleted"] = True
            return respond(None, 204)
        return respond(self._public(message))

    async def followup(self, request: web.Request) -> web.Response:
        state = self.interactions.get(request.match_info["token"])
        if state is None or state.get("expired"):
            return respond({"message": "Invalid Webhook Token", "code": 50027}, 401)
        body = request[BODY] or {}
        message = self.make_message(
            state["channel_id"],
            body,
            self.bot_user,
            request[FILES],
            interaction_token=state["token"],
            webhook_id=self.application_id,
        )
        state.setdefault("followups", []).append(message["id"])
        return respond(self._public(message))
