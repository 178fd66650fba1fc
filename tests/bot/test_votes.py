"""The channel votes on what happens next: through the real client, the fake
Discord, the tiny model and a real database file."""

from __future__ import annotations

import sqlite3
from typing import Any

from storage.shares import ShareStore
from storage.votes import VoteStore
from tests.bot.conftest import BotEnv
from tests.bot.helpers import bot_messages, button, buttons, is_story, start_story


def options_shown(env: BotEnv) -> list[dict[str, Any]]:
    return [m for m in bot_messages(env.fake) if "Option " in m["content"].split("\n")[0]]


def ballot(env: BotEnv) -> dict[str, Any]:
    return next(m for m in bot_messages(env.fake) if m["content"].startswith("🗳️"))


async def open_vote(env: BotEnv, story: dict[str, Any]) -> dict[str, Any]:
    fake = env.fake
    click = await fake.click(story, button(story, "Vote"), user=fake.alice)
    await click.reply(lambda m: "votes on what happens next" in m["content"])
    await fake.wait_until(lambda: len(options_shown(env)) >= 3, timeout=30)
    message = ballot(env)
    await fake.wait_until(
        lambda: [b.split(":")[1] for b in buttons(message)] == ["pick1", "pick2", "pick3"]
    )
    return message


async def vote_with_option_one_refused(env: BotEnv, story: dict[str, Any], times: int) -> None:
    """Start a vote whose first option Discord refuses to post (`times` times)."""
    fake = env.fake
    fake.server.inject(
        "POST",
        r"/channels/\d+/messages$",
        403,
        {"message": "Missing Permissions", "code": 50013},
        times=times,
        when=lambda body: str(body.get("content", "")).startswith("**Option 1**"),
    )
    click = await fake.click(story, button(story, "Vote"), user=fake.alice)
    await click.reply(lambda m: "votes on what happens next" in m["content"])


async def test_three_members_vote_and_the_majority_s_option_continues(env: BotEnv) -> None:
    fake = env.fake
    story = await start_story(env)
    votes = await open_vote(env, story)
    assert "What happens next?" in votes["content"] and "closes <t:" in votes["content"]
    shown = options_shown(env)
    assert [m["content"].split("\n")[0] for m in shown[:3]] == [
        "**Option 1**",
        "**Option 2**",
        "**Option 3**",
    ]
    assert not any(buttons(m) for m in shown)  # nobody continues an undecided option
    first = await fake.click(votes, button(votes, "2"), user=fake.bob)
    await first.followup(lambda m: "Your vote: option 2" in m["content"])
    assert "option 2: 1" in votes["content"] and "1 vote" in votes["content"]
    changed = await fake.click(votes, button(votes, "1"), user=fake.bob)  # changes his mind
    await changed.deferred()
    again = await fake.click(votes, button(votes, "2"), user=fake.bob)
    await again.deferred()
    await (await fake.click(votes, button(votes, "2"), user=fake.carol)).deferred()
    assert "option 2: 2" in votes["content"] and "2 votes" in votes["content"]
    await (await fake.click(votes, button(votes, "1"), user=fake.dana)).deferred()
    # Two of three for option 2: decided at once.
    await fake.wait_until(lambda: "Option 2 won (2 of 3 votes)" in ballot(env)["content"])
    assert not buttons(ballot(env))
    winner = shown[1]
    await fake.wait_until(lambda: is_story(winner) and "story:continue" in str(buttons(winner)))
    assert "part 2" in winner["content"]
    for loser in (shown[0], shown[2]):
        await fake.wait_until(lambda m=loser: "not chosen" in m["content"])
        assert not buttons(loser)
    assert env.store is not None and env.service is not None
    parts = await env.store.story_parts(1)
    options = {p.id: p for p in parts if p.parent_id == parts[1].id}
    assert len(options) == 3  # all kept, as siblings
    record = await VoteStore(env.store).get(1)
    chosen = record.candidate(2).part_id
    assert chosen is not None
    assert [p.id for p in options.values() if not p.candidate] == [chosen]
    _, _, path = await env.service.story(1)
    assert path[-1].id == chosen
    # The winner is continued like any part; an option not chosen is not.
    click = await fake.click(winner, button(winner, "Continue"), user=fake.bob)
    await click.reply(lambda m: "Writing the next part" in m["content"])
    late = await fake.click(votes, button(votes, "3"), user=fake.carol) if buttons(votes) else None
    assert late is None  # the ballot buttons are gone


async def test_voting_by_default_and_a_vote_that_outlives_a_restart(env: BotEnv) -> None:
    fake = env.fake
    handle = await fake.invoke(
        "storyadmin", user=fake.dana, subcommand="votes", options={"by_default": True}
    )
    await handle.reply(lambda m: "Continue and ➕ start a vote here" in m["content"])
    story = await start_story(env)
    await fake.react(story, "➕", user=fake.bob)  # a reaction starts a vote too
    await fake.wait_until(lambda: len(options_shown(env)) >= 3, timeout=30)
    shown = options_shown(env)
    votes = ballot(env)
    await fake.wait_until(lambda: bool(buttons(votes)))
    await (await fake.click(votes, button(votes, "3"), user=fake.bob)).deferred()
    await env.restart()  # the vote is state in the database: it survives
    await (await fake.click(votes, button(votes, "3"), user=fake.carol)).deferred()
    await (await fake.click(votes, button(votes, "1"), user=fake.alice)).deferred()
    await fake.wait_until(lambda: "Option 3 won (2 of 3 votes)" in ballot(env)["content"])
    winner = shown[2]
    await fake.wait_until(lambda: "story:continue" in str(buttons(winner)))
    assert all("not chosen" in m["content"] for m in shown[:2])


async def test_time_up_without_ballots_the_first_option_continues(env: BotEnv) -> None:
    fake = env.fake
    assert env.service is not None
    guild = int(fake.server.guild_id)
    await env.service.servers.guilds.update(guild, vote_seconds=1)  # shorter than admins may
    await env.service.servers.forget_cached(guild)
    story = await start_story(env)
    await open_vote(env, story)
    first = options_shown(env)[0]
    await fake.wait_until(lambda: "Nobody voted: option 1" in ballot(env)["content"], timeout=30)
    await fake.wait_until(lambda: "story:continue" in str(buttons(first)))


async def test_a_plus_on_the_ballot_says_it_is_a_vote(env: BotEnv) -> None:
    """The ballot shows no part: a ➕ on it is answered with what to do instead,
    and nothing is written."""
    fake = env.fake
    story = await start_story(env)
    votes = await open_vote(env, story)
    await fake.react(votes, "➕", user=fake.carol)
    notice = await fake.wait_for_message(lambda m: "This message is a vote" in m["content"])
    assert notice["content"].startswith(f"-# <@{fake.carol.id}>")
    assert (fake.carol.id, "➕") in votes["reactions_removed"]
    assert env.store is not None  # and her name was not kept: she wrote nothing
    assert await ShareStore(env.store).names([int(fake.carol.id)]) == {}


async def test_options_a_vote_never_showed_are_posted_at_the_next_start(env: BotEnv) -> None:
    """The vote opened, but its options could not be posted (here Discord refused
    the first one; a crash at that moment does the same): after a restart the
    options are posted, so nobody votes on options the channel cannot read."""
    fake = env.fake
    story = await start_story(env)
    await vote_with_option_one_refused(env, story, times=1)
    assert env.store is not None
    await fake.wait_until(lambda: fake.server.faults[0].fired == 1, timeout=30)  # refused
    assert options_shown(env) == []
    await env.restart()
    await fake.wait_until(lambda: len(options_shown(env)) == 3, timeout=30)
    shown = options_shown(env)
    assert [m["content"].split("\n")[0] for m in shown] == [
        "**Option 1**",
        "**Option 2**",
        "**Option 3**",
    ]
    votes = ballot(env)
    await fake.wait_until(
        lambda: [b.split(":")[1] for b in buttons(votes)] == ["pick1", "pick2", "pick3"]
    )
    await (await fake.click(votes, button(votes, "3"), user=fake.bob)).deferred()
    await (await fake.click(votes, button(votes, "3"), user=fake.carol)).deferred()
    await (await fake.click(votes, button(votes, "1"), user=fake.alice)).deferred()
    await fake.wait_until(lambda: "Option 3 won (2 of 3 votes)" in ballot(env)["content"])
    await fake.wait_until(lambda: "story:continue" in str(buttons(shown[2])))
    assert all("not chosen" in m["content"] for m in shown[:2])


async def test_an_option_deleted_in_discord_is_not_posted_again(env: BotEnv) -> None:
    """A moderator deletes an option while the vote is open: closing the vote
    brings the rest up to date and leaves that one deleted."""
    fake = env.fake
    story = await start_story(env)
    votes = await open_vote(env, story)
    shown = options_shown(env)
    await fake.delete(shown[1])

    def linked(message_id: str) -> bool:
        with sqlite3.connect(env.db_path) as conn:
            query = "SELECT 1 FROM messages WHERE message_id = ?"
            return conn.execute(query, (int(message_id),)).fetchone() is not None

    await fake.wait_until(lambda: not linked(shown[1]["id"]))  # the bot saw it go
    await (await fake.click(votes, button(votes, "3"), user=fake.bob)).deferred()
    await (await fake.click(votes, button(votes, "3"), user=fake.carol)).deferred()
    await (await fake.click(votes, button(votes, "1"), user=fake.alice)).deferred()
    await fake.wait_until(lambda: "not chosen" in shown[0]["content"])
    assert env.bot is not None
    publisher = env.bot.publisher
    await fake.wait_until(lambda: not publisher._tasks)  # every update is done
    assert not [m for m in bot_messages(fake) if m["content"].startswith("-# Option 2")]


async def test_options_refused_twice_are_posted_by_a_later_start(env: BotEnv) -> None:
    """Discord refuses the options at the vote and again at the first restart:
    the ballot is not shown open before its options are, so the next start
    still posts them."""
    fake = env.fake
    story = await start_story(env)
    await vote_with_option_one_refused(env, story, times=2)
    await fake.wait_until(lambda: fake.server.faults[0].fired == 1, timeout=30)
    await env.restart()
    await fake.wait_until(lambda: fake.server.faults[0].fired == 2, timeout=30)
    assert not buttons(ballot(env))  # not open to ballots on options nobody sees
    await env.restart()
    await fake.wait_until(lambda: len(options_shown(env)) == 3, timeout=30)
    votes = ballot(env)
    await fake.wait_until(lambda: len(buttons(votes)) == 3)


async def test_a_vote_resumed_after_a_restart_closes_in_the_channel(env: BotEnv) -> None:
    """The vote outlives a restart and closes on its timer in the new process,
    where no task follows its messages: the ballot and options still say how
    it ended, and the first option continues the story."""
    fake = env.fake
    assert env.service is not None
    guild = int(fake.server.guild_id)
    await env.service.servers.guilds.update(guild, vote_seconds=20)  # outlasts the restart
    await env.service.servers.forget_cached(guild)
    story = await start_story(env)
    votes = await open_vote(env, story)
    shown = options_shown(env)
    await env.restart()
    await fake.wait_until(lambda: "Nobody voted: option 1" in votes["content"], timeout=40)
    assert not buttons(votes)
    await fake.wait_until(lambda: "story:continue" in str(buttons(shown[0])))
    assert all("not chosen" in m["content"] for m in shown[1:])
