"""The test API over the fake Discord: invoke, click, react, delete, wait.

discord = FakeDiscord()
await discord.start()
handle = await discord.invoke("story", genre="crime", prompt="...", user=alice)
await handle.deferred()
story = await discord.wait_for_message(lambda m: "crime" in m["content"])
await discord.react(story, "➕", user=bob)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import discord
import discord.gateway
import discord.http
import yarl
from aiohttp import web

from tests.fakediscord.server import (
    ALL_PERMISSIONS,
    FakeDiscordServer,
    Recorded,
    Session,
    User,
    snowflake,
)


def check_redirection_points() -> None:
    """The only two discord.py internals the fake relies on. If an upgrade
    removes them, say so plainly instead of failing somewhere obscure."""
    if not isinstance(getattr(discord.http.Route, "BASE", None), str):
        raise RuntimeError("discord.http.Route.BASE is gone: the fake Discord cannot redirect REST")
    if not isinstance(getattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", None), yarl.URL):
        raise RuntimeError(
            "discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY is gone: "
            "the fake cannot redirect the gateway"
        )


def _ending(task: asyncio.Future[Any]) -> str:
    return "cancelled" if task.cancelled() else repr(task.exception())


def _text_inputs(component: dict[str, Any]) -> Any:
    """Every text input in a modal, in rows or in labels, in order."""
    if component.get("type") == 4:
        yield component
    for child in component.get("components", []):
        yield from _text_inputs(child)
    if isinstance(component.get("component"), dict):  # a label (type 18) holds one
        yield from _text_inputs(component["component"])


class InteractionHandle:
    def __init__(self, fake: FakeDiscord, state: dict[str, Any]) -> None:
        self.fake = fake
        self.state = state

    @property
    def id(self) -> str:
        return str(self.state["id"])

    @property
    def token(self) -> str:
        return str(self.state["token"])

    async def deferred(self, timeout: float = 5.0) -> int:
        """Wait for the bot's answer to the interaction (within Discord's 3 s)."""
        return int(await self.fake.wait_until(lambda: self.state["responded"], timeout))

    @property
    def original(self) -> dict[str, Any] | None:
        mid = self.state.get("original")
        return self.fake.server.messages.get(mid) if mid else None

    @property
    def followups(self) -> list[dict[str, Any]]:
        return [self.fake.server.messages[mid] for mid in self.state.get("followups", [])]

    async def followup(
        self, predicate: Callable[[dict[str, Any]], bool] = lambda m: True, timeout: float = 10.0
    ) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((m for m in self.followups if predicate(m)), None)

        result: dict[str, Any] = await self.fake.wait_until(found, timeout)
        return result

    async def reply(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """The original response or a followup, whichever first matches."""

        def found() -> dict[str, Any] | None:
            candidates = ([self.original] if self.original else []) + self.followups
            return next((m for m in candidates if predicate(m)), None)

        result: dict[str, Any] = await self.fake.wait_until(found, timeout)
        return result

    def expire(self) -> None:
        """Make the token expire, as after 15 minutes (webhooks answer 50027)."""
        self.state["expired"] = True


class FakeDiscord:
    def __init__(self) -> None:
        check_redirection_points()
        self.server = FakeDiscordServer()
        self.runner: web.AppRunner | None = None
        self._saved: tuple[str, yarl.URL] | None = None
        self.watch: list[asyncio.Task[Any]] = []  # tasks whose death fails every wait
        self.alice = self.server.add_user("alice")
        self.bob = self.server.add_user("bob")
        self.carol = self.server.add_user("carol")
        self.dana = self.server.add_user("dana")  # the server's admin (Manage Server)
        self.dana.admin = True
        # A role admins can hand story rights to; in the guild from the start.
        self.storytellers = self.server.add_role("Storytellers")

    async def start(self) -> None:
        self.runner = web.AppRunner(self.server.app(), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.server.url = f"http://{host}:{port}"
        self._saved = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
        discord.http.Route.BASE = f"{self.server.url}/api/v10"
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"ws://{host}:{port}/gateway")

    async def stop(self) -> None:
        if self._saved is not None:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._saved
        for session in list(self.server.sessions):
            await session.ws.close()
        if self.runner is not None:
            await self.runner.cleanup()

    # ----------------------------------------------------------------- waiting
    async def wait_until(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Wait for a condition, failing at once if a watched task (the bot) died."""
        waiter = asyncio.ensure_future(self.server.wait_until(predicate, timeout))
        for task in self.watch:
            if task.done():
                waiter.cancel()
                raise AssertionError(f"the bot's task ended: {_ending(task)}")
        watched = [task for task in self.watch if not task.done()]
        done, _ = await asyncio.wait([waiter, *watched], return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            raise AssertionError(f"the bot's task ended: {_ending(next(iter(done)))}")
        return waiter.result()

    def channel_id(self, name: str = "general") -> str:
        return str(self.server.channel(name)["id"])

    def messages(
        self, channel: str = "general", *, include_ephemeral: bool = False
    ) -> list[dict[str, Any]]:
        channel_id = self.channel_id(channel)
        return [
            m
            for m in self.server.messages.values()
            if m["channel_id"] == channel_id
            and not m.get("deleted")
            and (include_ephemeral or not (m.get("flags") or 0) & 64)
        ]

    async def wait_for_message(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        channel: str = "general",
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((m for m in self.messages(channel) if predicate(m)), None)

        result: dict[str, Any] = await self.wait_until(found, timeout)
        return result

    async def wait_for_edit(
        self, message: dict[str, Any], count: int = 1, timeout: float = 10.0
    ) -> None:
        await self.wait_until(lambda: len(message.get("edits", [])) >= count, timeout)

    def sent(self, method: str | None = None, path_contains: str = "") -> list[Recorded]:
        return [
            r
            for r in self.server.requests
            if (method is None or r.method == method) and path_contains in r.path
        ]

    def message_bodies(self) -> list[Recorded]:
        """Every request by which the bot said something (new message, edit, reply)."""
        return [
            r
            for r in self.server.requests
            if r.method in ("POST", "PATCH")
            and isinstance(r.json, dict)
            and ("/messages" in r.path or "/webhooks/" in r.path or r.path.endswith("/callback"))
        ]

    # ----------------------------------------------------------------- actions
    def visible_commands(self, user: User) -> set[str]:
        """The commands Discord shows this member: those whose
        default_member_permissions the member has (all of them, when unset)."""
        allowed = self.server.permissions_of(user)
        return {
            c["name"]
            for c in self.server.commands
            if c.get("default_member_permissions") is None
            or int(c["default_member_permissions"]) & allowed
            == int(c["default_member_permissions"])
        }

    def _command_data(
        self,
        command: str,
        subcommand: str | None,
        options: dict[str, Any],
        focused: str | None = None,
        where: str = "general",
    ) -> dict[str, Any]:
        definition = next((c for c in self.server.commands if c["name"] == command), None)
        if definition is None:
            raise AssertionError(
                f"/{command} was not synced (synced: {[c['name'] for c in self.server.commands]})"
            )
        declared_in = definition
        if subcommand is not None:
            declared_in = next(
                (o for o in definition.get("options", []) if o["name"] == subcommand), None
            )
            if declared_in is None or declared_in["type"] != 1:
                raise AssertionError(f"/{command} has no subcommand {subcommand!r}")
        declared = {o["name"]: o for o in declared_in.get("options", [])}
        values: list[dict[str, Any]] = []
        resolved: dict[str, dict[str, Any]] = {}
        for name, value in options.items():
            if value is None:
                continue
            if name not in declared:
                raise AssertionError(f"/{command} {subcommand or ''} has no option {name!r}")
            kind = declared[name]["type"]
            if kind == 7:  # a channel: Discord sends its id and the channel itself
                channel = self.server.channel(value)
                resolved.setdefault("channels", {})[channel["id"]] = {
                    **channel,
                    "permissions": ALL_PERMISSIONS,
                }
                value = channel["id"]
            elif kind == 8:  # a role: its id and the role
                resolved.setdefault("roles", {})[value] = self.server.roles[value]
            option = {"name": name, "type": kind, "value": value}
            if name == focused:
                option["focused"] = True
            values.append(option)
        if subcommand is not None:
            values = [{"name": subcommand, "type": 1, "options": values}]
        data: dict[str, Any] = {
            "id": definition["id"],
            "name": command,
            "type": 1,
            "options": values,
            "guild_id": self.server.guild_of(self.channel_id(where)),
        }
        if resolved:
            data["resolved"] = resolved
        return data

    async def invoke(
        self,
        command: str,
        *,
        user: User,
        channel: str = "general",
        subcommand: str | None = None,
        options: dict[str, Any] | None = None,
        to: Session | None = None,
        **named: Any,
    ) -> InteractionHandle:
        """A member runs a command in `channel`. Discord delivers only the commands
        the member can see (default_member_permissions): invoking another is a
        test error. Options come as keywords, or in `options` when a name is one
        of this method's own (a command's `channel` option). `to`: only that
        gateway connection gets it (default: each of the guild's shard)."""
        if command not in self.visible_commands(user):
            raise AssertionError(f"{user.username} cannot see /{command} in Discord")
        data = self._command_data(command, subcommand, {**named, **(options or {})}, where=channel)
        return await self._interaction(2, data, user, channel, to=to)

    async def invoke_granted(
        self,
        command: str,
        *,
        user: User,
        channel: str = "general",
        subcommand: str | None = None,
        **options: Any,
    ) -> InteractionHandle:
        """As `invoke`, for a member a server granted the command to although they
        lack its default permissions (Discord's per-server command settings)."""
        data = self._command_data(command, subcommand, options, where=channel)
        return await self._interaction(2, data, user, channel)

    async def autocomplete(
        self,
        command: str,
        option: str,
        typed: str,
        *,
        user: User,
        channel: str = "general",
        subcommand: str | None = None,
        timeout: float = 5.0,
        **others: Any,
    ) -> list[dict[str, Any]]:
        """What the bot suggests for `option` while `typed` is in it (a type 4
        interaction, answered with callback type 8)."""
        data = self._command_data(
            command, subcommand, {**others, option: typed}, focused=option, where=channel
        )
        handle = await self._interaction(4, data, user, channel)
        await self.wait_until(lambda: handle.state["responded"] == 8, timeout)
        choices: list[dict[str, Any]] = handle.state["choices"]
        return choices

    async def click(
        self, message: dict[str, Any], custom_id: str, *, user: User, to: Session | None = None
    ) -> InteractionHandle:
        ids = [
            c.get("custom_id")
            for row in message.get("components", [])
            for c in row.get("components", [])
        ]
        if custom_id not in ids:
            raise AssertionError(f"no button {custom_id!r} on the message (has {ids})")
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._interaction(3, data, user, None, message, to=to)

    async def select(
        self, message: dict[str, Any], custom_id: str, values: list[str], *, user: User
    ) -> InteractionHandle:
        data = {"custom_id": custom_id, "component_type": 3, "values": values}
        return await self._interaction(3, data, user, None, message)

    async def _interaction(
        self,
        kind: int,
        data: dict[str, Any],
        user: User,
        channel: str | None,
        message: dict[str, Any] | None = None,
        to: Session | None = None,
    ) -> InteractionHandle:
        channel_id = message["channel_id"] if message else self.channel_id(channel or "general")
        channel_data = self.server.channels[channel_id]
        guild_id = self.server.guild_of(channel_id)
        token = f"itoken-{snowflake()}"
        state = {
            "id": snowflake(),
            "token": token,
            "type": kind,
            "channel_id": channel_id,
            "responded": None,
            "message_id": message["id"] if message else None,
        }
        self.server.interactions[token] = state
        payload = {
            "id": state["id"],
            "application_id": self.server.application_id,
            "type": kind,
            "data": data,
            "guild_id": guild_id,
            "channel_id": channel_id,
            "channel": channel_data,
            "member": self.server.member(user),
            "token": token,
            "version": 1,
            "app_permissions": str(self.server.bot_permissions),
            "locale": user.locale,
            "guild_locale": self.server.guild_locale,
            "entitlements": [],
            "context": 0,
            "authorizing_integration_owners": {"0": guild_id},
            "attachment_size_limit": 25 * 1024 * 1024,
        }
        if message is not None:
            payload["message"] = self.server._public(message)
        await self.server.dispatch("INTERACTION_CREATE", payload, to=to)
        return InteractionHandle(self, state)

    async def submit_modal(
        self, opened: InteractionHandle, values: dict[str, str], *, user: User
    ) -> InteractionHandle:
        """The member fills in the modal the bot answered `opened` with and sends
        it (a type 5 interaction). `values`: text input label -> what they typed;
        inputs not named are sent with the text they were prefilled with."""
        await self.wait_until(lambda: opened.state["responded"] == 9)
        modal = opened.state["modal"]
        inputs = list(_text_inputs(modal))
        unknown = set(values) - {i.get("label") for i in inputs}
        if unknown:
            raise AssertionError(f"no text input labelled {sorted(unknown)} in the modal")
        rows = [
            {
                "type": 1,
                "components": [
                    {
                        "type": 4,
                        "custom_id": i["custom_id"],
                        "value": values.get(i.get("label", ""), i.get("value") or ""),
                    }
                ],
            }
            for i in inputs
        ]
        data = {"custom_id": modal["custom_id"], "components": rows}
        channel = next(
            c["name"]
            for c in self.server.channels.values()
            if c["id"] == opened.state["channel_id"]
        )
        return await self._interaction(5, data, user, channel)

    async def set_guild_locale(self, locale: str) -> None:
        """The server's admins choose its language (a Discord locale, "de",
        "es-ES"): a GUILD_UPDATE, and the guild_locale of interactions from now on."""
        self.server.guild_locale = locale
        update = self.server.guild_payload()
        for key in ("members", "channels", "presences", "voice_states", "threads"):
            update.pop(key, None)  # as Discord sends it: the guild's own fields
        await self.server.dispatch("GUILD_UPDATE", update)

    async def react(
        self, message: dict[str, Any], emoji: str, *, user: User, to: Session | None = None
    ) -> None:
        """A member reacts: each connection of the guild's shard gets the event
        (or only `to`)."""
        message.setdefault("user_reactions", []).append((user.id, emoji))
        await self.server.dispatch(
            "MESSAGE_REACTION_ADD", self.server.reaction_payload(message, user, emoji), to=to
        )

    def assert_clean(self) -> None:
        """Fail the test if the bot sent anything that could ping, or if a fault it
        injected never fired (see FakeDiscordServer.problems)."""
        problems = self.server.problems()
        assert not problems, "\n".join(problems)

    async def delete(self, message: dict[str, Any]) -> None:
        message["deleted"] = True
        await self.server.dispatch(
            "MESSAGE_DELETE",
            {
                "id": message["id"],
                "channel_id": message["channel_id"],
                "guild_id": message["guild_id"],
            },
        )
        await self.server._notify()

    async def post_as(self, user: User, content: str, channel: str = "general") -> dict[str, Any]:
        """A message by someone else, arriving over the gateway."""
        message = self.server.make_message(self.channel_id(channel), {"content": content}, user)
        await self.server.dispatch("MESSAGE_CREATE", self.server._public(message))
        return message
