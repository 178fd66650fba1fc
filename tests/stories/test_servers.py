"""What a server's admins decide holds for every story there (stories.servers
through the real service, the tiny model and a real SQLite file)."""

from __future__ import annotations

import pytest

from storage.models import GuildSettings
from stories.errors import (
    ChannelClosed,
    GenreDisabled,
    InvalidSetting,
    NotAllowed,
    PartHidden,
    QuotaReached,
    UserLimit,
)
from stories.servers import Member, seconds_to_midnight_utc
from stories.service import Requester, StoryOptions, StoryService

GUILD, CHANNEL, OTHER_CHANNEL, ROLE = 10, 20, 21, 30
ADMIN_ID = 99


def member(user_id: int, *, channel: int = CHANNEL, **kwargs: object) -> Requester:
    return Requester(
        user_id=user_id,
        guild_id=GUILD,
        channel_id=channel,
        member=Member(**kwargs),  # type: ignore[arg-type]
    )


ALICE, BOB = member(1), member(2)
SHORT = StoryOptions(genre="crime", max_new_tokens=4)


async def write(service: StoryService, who: Requester, **options: object) -> int:
    """A story's first part, written; its part id."""
    run = await service.start("The night was", StoryOptions(**(vars(SHORT) | options)), who)
    return (await run.outcome()).part.id


async def test_a_server_without_settings_gets_the_operators_defaults(
    service: StoryService,
) -> None:
    assert await write(service, ALICE) > 0
    assert await service.servers.settings(GUILD) == GuildSettings(GUILD)
    assert await service.servers.settings(None) is None  # the HTTP interface


async def test_only_the_chosen_channels_get_stories(service: StoryService) -> None:
    await service.servers.update(GUILD, ADMIN_ID, channels=[OTHER_CHANNEL])
    with pytest.raises(ChannelClosed, match="does not write stories in this channel"):
        await write(service, ALICE)
    assert await write(service, member(1, channel=OTHER_CHANNEL)) > 0
    await service.servers.update(GUILD, ADMIN_ID, channels=None)  # all again, at once
    assert await write(service, BOB) > 0


async def test_disabled_genres_are_refused(service: StoryService) -> None:
    await service.servers.update(GUILD, ADMIN_ID, genres=["fantasy", "romance"])
    with pytest.raises(GenreDisabled, match="Crime genre is not enabled"):
        await write(service, ALICE)
    assert await write(service, ALICE, genre="fantasy") > 0
    enabled = service.servers.enabled_genres(await service.servers.settings(GUILD))
    assert sorted(enabled) == ["fantasy", "romance"]  # in the genre file's order
    assert await write(service, Requester(user_id=1), genre="crime") > 0  # not in a server


async def test_the_daily_quota_counts_the_whole_server(service: StoryService) -> None:
    await service.servers.update(GUILD, ADMIN_ID, daily_quota=2)
    await write(service, ALICE)
    await write(service, BOB)
    with pytest.raises(QuotaReached) as refused:
        await write(service, member(3))
    assert "2 stories for today" in str(refused.value)
    assert refused.value.retry_after == pytest.approx(seconds_to_midnight_utc(), abs=5)
    today, month = await service.servers.counts(GUILD)
    assert today.stories == month.stories == 2


async def test_a_refused_story_does_not_use_up_the_quota(service: StoryService) -> None:
    await service.servers.update(GUILD, ADMIN_ID, daily_quota=1)
    with pytest.raises(InvalidSetting):
        await service.servers.update(GUILD, ADMIN_ID, cooldown_s=99_999)
    with pytest.raises(Exception, match="temperature"):  # invalid: refused before counting
        await write(service, ALICE, temperature=0.0)
    assert await write(service, ALICE) > 0


async def test_member_limits_are_the_servers_within_the_operators_bounds(
    service: StoryService,
) -> None:
    with pytest.raises(InvalidSetting, match="between 1 and 2"):
        await service.servers.update(GUILD, ADMIN_ID, max_active=5)  # looser than the bot's
    await service.servers.update(GUILD, ADMIN_ID, cooldown_s=600)
    await write(service, ALICE)
    with pytest.raises(UserLimit, match="Slow down"):
        await write(service, ALICE)
    assert await write(service, BOB) > 0  # per member


async def test_who_may_continue(service: StoryService) -> None:
    part = await write(service, ALICE)
    await service.servers.update(GUILD, ADMIN_ID, continue_policy="author")
    with pytest.raises(NotAllowed, match="only a story's author"):
        await service.continue_from(part, BOB, SHORT)
    admin = member(ADMIN_ID, admin=True)
    started = await service.continue_from(part, admin, SHORT)  # admins always may
    part = (await started.run.outcome()).part.id
    await service.servers.update(GUILD, ADMIN_ID, continue_policy="role", continue_role_id=ROLE)
    with pytest.raises(NotAllowed, match="storytellers' role"):
        await service.continue_from(part, BOB, SHORT)
    with_role = member(2, roles=(ROLE,))
    started = await service.continue_from(part, with_role, SHORT)
    newest = (await started.run.outcome()).part.id
    # With the role, rerolling someone else's part is allowed too; without, not.
    with pytest.raises(NotAllowed, match="Only the story's author can reroll"):
        await service.reroll(newest, member(3))
    await (await service.reroll(newest, with_role)).outcome()


async def test_a_part_hidden_after_reports_cannot_be_continued(service: StoryService) -> None:
    part = await write(service, ALICE)
    tally = await service.servers.report(GUILD, part, 7, Member(admin=True))
    assert tally.hidden
    with pytest.raises(PartHidden):
        await service.continue_from(part, BOB, SHORT)
    await service.servers.guilds.restore(part)
    await (await service.continue_from(part, BOB, SHORT)).run.outcome()


async def test_settings_are_checked_before_they_are_saved(service: StoryService) -> None:
    with pytest.raises(InvalidSetting, match="Unknown genre: cooking"):
        await service.servers.update(GUILD, ADMIN_ID, genres=["crime", "cooking"])
    with pytest.raises(InvalidSetting, match="At least one genre"):
        await service.servers.update(GUILD, ADMIN_ID, genres=[])
    with pytest.raises(InvalidSetting, match="length"):
        await service.servers.update(GUILD, ADMIN_ID, default_length="epic")
    assert await service.servers.settings(GUILD) == GuildSettings(GUILD)
