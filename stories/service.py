"""The story use-cases that the bot and the HTTP interface both call.

Every generation is a *run*: it writes one part (the first part of a story, the
next part after a part, or a new version of a part), has an id, a requester and
a state stored in the database, and is tracked here while it is in flight. What
may happen to a part at once is decided here, in one place:

- Two requests to continue the same part share one run; the second caller is
  told it joined (`Started.new` is False) and shows nothing of its own.
- A part being rerolled cannot be continued or rerolled again until the reroll
  ends; a part being continued, or already continued, cannot be rerolled.
- Continuing a story (HTTP) while one of its parts is being written is refused
  (`StillWriting`), never turned into a silent branch.
- The same holds between processes that share one database (PostgreSQL): each
  run claims its part in the database too (`Store.create_run(claim=True)`).
  A claim lost to a run of another process is refused the way a local one is;
  a continuation cannot be joined there, so it says someone is writing it
  (`WritingElsewhere`).

A front-end that shows the run somewhere passes `announce`: it is awaited after
every check and before anything is generated, so a run whose message cannot be
posted is never generated. The run's completion (storing the part, recording
the state) is owned by the service in a task of its own, so a front-end that
goes away (a closed HTTP connection, a deleted message) loses nothing written.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from generation.errors import Cancelled, GenerationError, InvalidRequest, PoolClosed
from generation.messages import N_
from generation.model_pools import ModelPools
from generation.pool import GenerationPool, Reservation, Ticket
from generation.types import GenerationParams, GenerationRequest, GenerationResult
from storage.errors import Claimed, NotFound, StorageError
from storage.guilds import GuildStore
from storage.models import (
    Deleted,
    GeneratedPart,
    GuildSettings,
    Part,
    ReportTally,
    RunKind,
    RunRecord,
    Source,
    Status,
    Story,
    StoryPage,
)
from storage.store import Store
from storage.votes import VoteRecord, VoteStore
from stories import export, telemetry
from stories.errors import (
    AgeRestricted,
    Conflict,
    ContentFiltered,
    ControlCharacter,
    EmptyPrompt,
    InvalidNotes,
    NotAllowed,
    NothingToContinue,
    OverlongPrompt,
    PartHidden,
    StillWriting,
    StoryDeleted,
    UserLimit,
    WritingElsewhere,
)
from stories.genres import Genre, GenreRegistry
from stories.moderation import ContentFilter
from stories.servers import Limits, Member, ServerRules
from stories.telemetry import NoObserver, StoryObserver, outcome_of, reports_refusals
from stories.votes import Votes

log = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 4000  # a prompt longer than this is refused, not silently cut
MAX_MEMORY_CHARS = 500  # a story's memory: who and where
MAX_NOTE_CHARS = 200  # a story's author's note: the tone, what should happen next
REMOVED_TEXT = " [removed after reports]"  # what a hidden part reads as
INTERRUPTED = N_("Interrupted by a restart.")
# What is wrong with a story's notes: a sentence per note, since the words
# around "memory" and "author's note" differ from language to language.
_MEMORY_ERRORS = {
    "type": N_("The memory must be text."),
    "long": N_("The memory is too long: at most {limit} characters.", limit=MAX_MEMORY_CHARS),
    "control": N_("The memory contains an invisible control character."),
    "filtered": N_("The content filter refused that memory."),
}
_NOTE_ERRORS = {
    "type": N_("The author's note must be text."),
    "long": N_("The author's note is too long: at most {limit} characters.", limit=MAX_NOTE_CHARS),
    "control": N_("The author's note contains an invisible control character."),
    "filtered": N_("The content filter refused that author's note."),
}
# Zero-width and other invisible characters: a prompt of only these is empty.
# Control characters other than tab and line breaks: never part of a story (and
# a NUL cuts the text short in many a client); the C1 ones too (U+009B opens a
# terminal escape as ESC [ does), and lone surrogates, which JSON's \u escapes
# can carry but no UTF-8 text holds.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"), None)


@dataclass(frozen=True)
class StoryOptions:
    """What a person chose: everything optional has a genre default."""

    genre: str | None = None
    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    # The story's notes: given with /story or POST /, or changed before a part.
    memory: str | None = None
    authors_note: str | None = None


def _fit(params: GenerationParams, options: StoryOptions, pool: GenerationPool) -> GenerationParams:
    """A length nobody asked for (the genre's default) fits the server's limit; a
    length somebody asked for is theirs, and is refused if it does not."""
    limit = pool.max_new_tokens_limit
    if options.max_new_tokens is not None or params.max_new_tokens <= limit:
        return params
    return replace(
        params,
        max_new_tokens=limit,
        min_new_tokens=min(params.min_new_tokens, limit)
        if options.min_new_tokens is None
        else params.min_new_tokens,
    )


@dataclass(frozen=True)
class Requester:
    user_id: int | None  # None: the HTTP interface
    source: Source = "discord"
    guild_id: int | None = None
    channel_id: int | None = None
    age_restricted_ok: bool = False  # the channel allows age-restricted genres
    member: Member = field(default_factory=Member)  # roles; do they manage the server


@dataclass(frozen=True)
class PartOutcome:
    """A finished run: the stored part, the text it continues, the numbers."""

    story: Story
    part: Part
    previous_text: str  # the story's text before this part
    result: GenerationResult


@dataclass(eq=False)  # identity: one object per run in flight
class Run:
    """One generation in flight, as seen by a front-end. Any number of readers
    may follow it at once: each gets every position, every piece of text and
    the outcome."""

    record: RunRecord
    story: Story
    parent: Part
    genre: Genre
    previous_text: str
    number: int  # the part it writes: 1 for a story's first generated part
    replaces: Part | None = None  # reroll: the part it writes a new version of
    predicted_position: int = 1  # before it is queued: where it will stand
    ticket: Ticket | None = None
    state: Status = "queued"  # as recorded; final before `done` resolves
    announced: bool = False  # a front-end showed it when it began (HTTP runs are not)
    deleted: bool = False  # its story (or its parent part) was deleted meanwhile
    cancel_requested: bool = False  # cancelled before it was queued
    done: asyncio.Future[PartOutcome] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    release_slot: Callable[[], None] = field(default=lambda: None, repr=False)
    cooldown_s: float = 0.0  # its requester's cooldown where it was asked for
    memory: str = ""  # the story's notes it is written with
    authors_note: str = ""
    source: Source = "discord"  # the front-end that asked for it (for metrics)
    # The content filter of the server it is written in: what it writes is masked
    # before anyone sees it, streamed or stored.
    words: ContentFilter = field(default_factory=ContentFilter.builtin, repr=False)

    @property
    def id(self) -> int:
        return self.record.id

    @property
    def kind(self) -> RunKind:
        return self.record.kind

    @property
    def requested_by(self) -> int | None:
        return self.record.requested_by

    @property
    def seed(self) -> int:
        return self.record.seed or 0

    @property
    def position(self) -> int:
        """1.. while waiting; 0 while generating; -1 once finished."""
        if self.ticket is None:
            return -1 if self.done.done() else self.predicted_position
        return self.ticket.position

    async def positions(self) -> AsyncIterator[int]:
        if self.ticket is not None:
            async for position in self.ticket.positions():
                yield position

    async def stream(self) -> AsyncIterator[str]:
        """The text as it is written, masked where the content filter matches (a
        word is held back until it is whole, so nothing slips out half-shown)."""
        if self.ticket is not None:
            masker = self.words.stream()
            async for delta in self.ticket.stream():
                if shown := masker.push(delta):
                    yield shown
            if rest := masker.finish():
                yield rest

    async def outcome(self) -> PartOutcome:
        return await asyncio.shield(self.done)

    def cancel(self) -> bool:
        if self.ticket is not None:
            return self.ticket.cancel()
        if self.done.done():
            return False
        self.cancel_requested = True  # still being shown: it will not be queued
        return True


@dataclass(frozen=True)
class Started:
    """What a request to continue got: a run, and whether it is a new one (False:
    someone asked for the same part a moment earlier, and this joined theirs)."""

    run: Run
    new: bool


@dataclass(frozen=True)
class PartView:
    """A stored part with what a front-end needs to show it."""

    story: Story
    part: Part
    number: int  # 1 for the first generated part
    genre_title: str
    prompt: str | None  # the story's prompt, shown above its first part


@dataclass(frozen=True)
class RunView:
    """A run (in flight or ended) with what a front-end needs to show it."""

    story: Story
    record: RunRecord
    number: int
    genre_title: str
    prompt: str | None


@dataclass(frozen=True)
class VoteView:
    """A vote with what a front-end needs to show it."""

    record: VoteRecord
    story: Story
    genre_title: str


Announce = Callable[[Run], Awaitable[None]]


ClaimKind = Literal["start", "continue", "reroll", "vote"]


@dataclass
class _Claim:
    """The one action on a part: a continuation of it, a reroll of it, or a vote
    on what follows it."""

    kind: ClaimKind
    ready: asyncio.Future[Run]
    run: Run | None = None


def _lost_claim(lost: Claimed, doing: ClaimKind) -> Conflict:
    """The refusal for a claim that a run or a vote of another process holds
    (the words are those of the same refusal within one process)."""
    if doing == "reroll":
        if lost.by == "reroll":
            return Conflict(N_("This part is already being rerolled."))
        return Conflict(
            N_("Someone is continuing this part; reroll the newest part once it is written.")
        )
    if doing == "vote":
        if lost.by == "vote":
            return Conflict(N_("The channel is voting on this part already."))
        return Conflict(N_("Someone is writing the next part already."))
    if lost.by == "reroll":
        return Conflict(
            N_("That part is being rerolled: continue it once its new version is shown.")
        )
    if lost.by == "vote":
        return Conflict(
            N_(
                "The channel is voting on what happens next: vote, and continue the "
                "winning option once the vote is over."
            )
        )
    return WritingElsewhere()


def join_text(previous: str, continuation: str) -> str:
    """The continuation to store after `previous`, without a doubled space."""
    if previous.endswith((" ", "\n")) and continuation.startswith(" "):
        return continuation.lstrip(" ")
    return continuation


class StoryService:
    def __init__(
        self,
        store: Store,
        pool: GenerationPool,
        genres: GenreRegistry,
        *,
        user_max_active: int = 2,
        user_cooldown_s: float = 0.0,
        models: ModelPools | None = None,
        observer: StoryObserver | None = None,
    ) -> None:
        self.store = store
        self.observer = observer or NoObserver()  # told how each request ended
        self.pool = pool  # the default model's
        self.models = models  # genre models, loaded on demand; None: one model for all
        self.genres = genres
        self.servers = ServerRules(
            GuildStore(store),
            genres,
            user_max_active=user_max_active,
            user_cooldown_s=user_cooldown_s,
        )
        self._runs: dict[int, Run] = {}  # run id -> run in flight
        self._claims: dict[int, _Claim] = {}  # part id -> the run acting on it
        self._active: dict[int, int] = {}  # user id -> runs in flight or being set up
        # user id -> when their last run began, and when the cooldown that applied
        # there (their server's) ends
        self._last_start: dict[int, tuple[float, float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.votes = Votes(self, VoteStore(store))
        self._missing_models: set[str] = set()
        self._closing = False

    # ------------------------------------------------------------------ checks
    def _check_open(self) -> None:
        if self._closing:
            raise PoolClosed(N_("storybot is restarting; try again in a minute."))

    def _check_prompt(self, prompt: str) -> str:
        """The one check of a first line, for every front-end: the Discord option's
        length and the HTTP body's type are all the front-ends check themselves."""
        if not isinstance(prompt, str) or not prompt.translate(_INVISIBLE).strip():
            raise EmptyPrompt()
        if len(prompt) > MAX_PROMPT_CHARS:
            raise OverlongPrompt(MAX_PROMPT_CHARS)
        if control := _CONTROL.search(prompt):
            raise ControlCharacter(control.group())
        return prompt.strip()

    def _check_notes(self, memory: str, note: str, words: ContentFilter) -> tuple[str, str]:
        """A story's memory and author's note: short, no control characters, and
        nothing the content filter refuses (they steer what the model writes)."""
        # One sentence per note and problem: "memory" and "author's note" take
        # different words around them in other languages.
        for text, limit, wrong in (
            (memory, MAX_MEMORY_CHARS, _MEMORY_ERRORS),
            (note, MAX_NOTE_CHARS, _NOTE_ERRORS),
        ):
            if not isinstance(text, str):
                raise InvalidNotes(wrong["type"])
            if len(text) > limit:
                raise InvalidNotes(wrong["long"])
            if _CONTROL.search(text):
                raise InvalidNotes(wrong["control"])
            if words.matches(text):
                raise ContentFiltered(wrong["filtered"])
        return memory.strip(), note.strip()

    def _take_slot(self, who: Requester, limits: Limits) -> Callable[[], None]:
        """Check the per-person limits and hold one of the person's slots; the
        returned function gives it back (once, however often it is called)."""
        user = who.user_id
        if user is None:
            return lambda: None
        active = self._active.get(user, 0)
        if active >= limits.max_active:
            raise UserLimit(
                N_(
                    "You already have {active} stories being written; "
                    "wait for one to finish (or cancel it).",
                    active=active,
                )
            )
        last = self._last_start.get(user)
        if last is not None:
            started, until = last
            wait = max(until, started + limits.cooldown_s) - time.monotonic()
            if wait > 0:
                raise UserLimit(
                    N_(
                        "Slow down a little: try again in {seconds} s.", seconds=max(1, round(wait))
                    ),
                    retry_after=wait,
                )
        self._active[user] = active + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                left = self._active.get(user, 1) - 1
                if left > 0:
                    self._active[user] = left
                else:
                    self._active.pop(user, None)

        return release

    def _started_now(self, user: int | None, cooldown_s: float) -> None:
        if user is None:
            return
        now = time.monotonic()
        self._last_start[user] = (now, now + cooldown_s)
        if len(self._last_start) > 256:  # forget people whose cooldown has passed
            self._last_start = {u: t for u, t in self._last_start.items() if t[1] > now}

    def _genre(self, key: str | None, who: Requester) -> Genre:
        genre = self.genres.get(key)
        if genre.age_restricted and not who.age_restricted_ok:
            raise AgeRestricted(
                N_(
                    "The {genre} genre is only available in age-restricted channels.",
                    genre=genre.title,
                )
            )
        return genre

    def _story_genre(self, story: Story, who: Requester) -> Genre:
        return self._genre(story.genre, who) if story.genre in self.genres else self.genres.default

    async def _pool_for(self, genre: Genre) -> GenerationPool:
        """The genre's own model when it has one and its folder exists, else the default."""
        if genre.model is None or self.models is None:
            return self.pool
        if not (genre.model / "config.json").is_file():
            if genre.key not in self._missing_models:
                self._missing_models.add(genre.key)
                log.warning(
                    "genre %s: model folder %s not found; the default model serves it",
                    genre.key,
                    genre.model,
                )
            return self.pool
        return await self.models.pool_for(genre.model)

    # --------------------------------------------------------------- use-cases
    @reports_refusals
    async def start(
        self,
        prompt: str,
        options: StoryOptions,
        who: Requester,
        *,
        announce: Announce | None = None,
    ) -> Run:
        """Start a story: validate, store it with its first run, show it, generate."""
        self._check_open()
        server = await self.servers.settings(who.guild_id)
        self.servers.check_channel(server, who.channel_id)
        prompt = self._check_prompt(prompt)
        words = self.servers.content_filter(server)
        memory, note = self._check_notes(options.memory or "", options.authors_note or "", words)
        if words.matches(prompt):
            await self.servers.count(who.guild_id, "refused")
            log.info("a prompt from %s was refused by the content filter", who.user_id)
            raise ContentFiltered(
                N_("This server's filter refused that prompt.")
                if who.guild_id is not None
                else N_("The content filter refused that prompt.")
            )
        genre = self._genre(options.genre, who)
        self.servers.check_genre(server, genre.key)
        params = genre.params(**asdict(options)).with_seed()
        pool = await self._pool_for(genre)
        params = _fit(params, options, pool)
        request = GenerationRequest(
            prompt, params, primer=genre.primer, memory=memory, authors_note=note
        )
        # The one validation step: bad input (then Busy) is refused before the
        # person's limits are counted and before anything is stored or shown.
        reservation = pool.reserve(request)
        try:
            release = self._take_slot(who, self.servers.limits(server))
        except BaseException:
            reservation.release()
            raise
        try:
            await self.servers.take_story(server)  # the server's daily quota
        except BaseException:
            reservation.release()
            release()
            raise
        try:
            story, root, record = await self.store.create_story(
                prompt=prompt,
                genre=genre.key,
                author_id=who.user_id,
                source=who.source,
                guild_id=who.guild_id,
                channel_id=who.channel_id,
                seed=params.seed,
                memory=memory,
                authors_note=note,
            )
        except BaseException:
            reservation.release()
            release()
            await asyncio.shield(self.servers.give_back_story(server))
            raise
        run = Run(record, story, root, genre, prompt, 1, release_slot=release)
        run.source = who.source
        run.cooldown_s = self.servers.limits(server).cooldown_s
        run.words = words
        run.memory, run.authors_note = memory, note
        await self._launch(run, pool, request, reservation, announce, new_story=True, server=server)
        return run

    @reports_refusals
    async def continue_from(
        self,
        part_id: int,
        who: Requester,
        options: StoryOptions | None = None,
        *,
        announce: Announce | None = None,
        kind: RunKind = "continue",
    ) -> Started:
        """Write the next part after `part_id`. Two requests at once share one run."""
        self._check_open()
        while (claim := self._claims.get(part_id)) is not None:
            if claim.kind == "reroll":
                raise Conflict(
                    N_("That part is being rerolled: continue it once its new version is shown.")
                )
            if claim.kind == "vote":
                raise Conflict(
                    N_(
                        "The channel is voting on what happens next: vote, and continue the "
                        "winning option once the vote is over."
                    )
                )
            try:
                return Started(await asyncio.shield(claim.ready), new=False)
            except Exception:
                continue  # that request was refused (its person's limit): try ours
        claim = self._claim(part_id, "continue")
        try:
            parent = await self.store.get_part(part_id)
            story = await self.store.get_story(parent.story_id)
            run = await self._begin(story, parent, kind, who, options, None, announce)
        except BaseException as error:
            self._fail_claim(part_id, claim, error)
            raise
        self._settle_claim(claim, run)
        return Started(run, new=True)

    @reports_refusals
    async def continue_story(
        self, story_id: int, who: Requester, options: StoryOptions | None = None
    ) -> Run:
        """Write the next part after the story's newest one. Refused while any part
        of the story is being written: the newest part is not known yet."""
        self._check_open()
        busy = [run for run in self._runs.values() if run.story.id == story_id]
        if busy:
            raise StillWriting(
                N_(
                    "Story {story} is still being written (part {part}); "
                    "continue it once that part is done.",
                    story=story_id,
                    part=busy[0].number,
                )
            )
        # The part is written with the notes it brings, so they are saved first,
        # and put back if the part is refused (its options, or a prompt the new
        # memory makes too long): a refused request changes nothing.
        before = None
        if options is not None and (options.memory is not None or options.authors_note is not None):
            before = await self.store.get_story(story_id)
            await self.set_notes(story_id, who, options.memory, options.authors_note)
        try:
            latest = await self.store.latest_part(story_id)
            started = await self.continue_from(latest.id, who, options)
        except Exception:
            if before is not None:
                await self.store.set_notes(story_id, before.memory, before.authors_note)
            raise
        return started.run

    @reports_refusals
    async def continue_after_run(
        self, run_id: int, who: Requester, *, announce: Announce | None = None
    ) -> Started:
        """Continue after the part a run wrote (a reaction on the message that
        showed the run). Refused while the run is still writing it."""
        run = self._runs.get(run_id)
        if run is not None:
            raise StillWriting(
                N_("That part is still being written: react again once it is finished.")
            )
        record = await self.store.get_run(run_id)
        if record.part_id is None:
            raise NothingToContinue(
                N_("That part was never written: press Retry on it to write it again.")
            )
        return await self.continue_from(record.part_id, who, announce=announce)

    @reports_refusals
    async def reroll(
        self, part_id: int, who: Requester, *, announce: Announce | None = None
    ) -> Run:
        """A new version of a generated part (new seed), kept as its sibling. The old
        version stays in place until the new one is complete."""
        self._check_open()
        claim = self._claims.get(part_id)
        if claim is not None:
            raise Conflict(
                N_("This part is already being rerolled.")
                if claim.kind == "reroll"
                else N_(
                    "Someone is continuing this part; reroll the newest part once it is written."
                )
            )
        claim = self._claim(part_id, "reroll")
        try:
            part = await self.store.get_part(part_id)
            story = await self.store.get_story(part.story_id)
            if part.parent_id is None:
                raise NothingToContinue(
                    N_("The prompt itself cannot be rerolled; continue the story instead.")
                )
            if await self.store.has_children(part_id):
                raise Conflict(
                    N_(
                        "This part has been continued already, so a new version would leave the "
                        "next parts hanging: reroll the newest part instead."
                    )
                )
            parent = await self.store.get_part(part.parent_id)
            keep = StoryOptions(max_new_tokens=(part.params or {}).get("max_new_tokens"))
            run = await self._begin(
                story, parent, "reroll", who, keep, part, announce, claim="reroll"
            )
        except BaseException as error:
            self._fail_claim(part_id, claim, error)
            raise
        self._settle_claim(claim, run)
        return run

    @reports_refusals
    async def retry(
        self, run_id: int, who: Requester, *, announce: Announce | None = None
    ) -> Started:
        """Run again what a run that ended without a part (interrupted, failed) was
        writing, under the same rules as the first time."""
        self._check_open()
        if run_id in self._runs:
            raise Conflict(N_("This part is being written already."))
        record = await self.store.get_run(run_id)
        if record.state == "done":
            raise Conflict(N_("This part was written already."))
        if record.kind == "reroll":
            if record.replaces_id is None:
                raise NothingToContinue(N_("The part this would replace no longer exists."))
            return Started(await self.reroll(record.replaces_id, who, announce=announce), True)
        if record.kind == "start" and await self.store.has_children(record.parent_id):
            raise Conflict(N_("This story's first part was written already."))
        return await self.continue_from(record.parent_id, who, announce=announce, kind=record.kind)

    async def cancel(self, run_id: int, who: Requester) -> bool:
        """Cancel a run in flight; False when there is nothing to cancel any more."""
        run = self._runs.get(run_id)
        if run is None:
            return False
        if who.user_id is not None and run.requested_by not in (who.user_id, None):
            raise NotAllowed(N_("Only the person who asked for this part can cancel it."))
        return run.cancel()

    async def delete_story(self, story_id: int, who: Requester) -> Deleted:
        """Delete a story and stop every run on it; its messages are left for the
        front-end to clear (they show nothing any more)."""
        story = await self.store.get_story(story_id)
        if who.user_id is not None and story.author_id != who.user_id:
            raise NotAllowed(N_("Only the story's author can delete it."))
        deleted = await self.store.delete_story(story_id)
        await self._stop_orphans()
        return deleted

    async def forget(self, user_id: int) -> Deleted:
        """Delete everything a person wrote, and stop the runs that wrote into it."""
        deleted = await self.store.delete_user(user_id)
        await self._stop_orphans()
        return deleted

    async def _stop_orphans(self) -> None:
        """Runs whose rows went with a deletion are cancelled: nobody will see them."""
        for run in list(self._runs.values()):
            try:
                await self.store.get_run(run.id)
            except NotFound:
                run.deleted = True
                run.cancel()

    # ------------------------------------------------------------- life cycle
    def stop_accepting(self) -> None:
        """Shutting down: refuse new work (runs in flight go on)."""
        self._closing = True

    async def recover_interrupted(self) -> list[RunRecord]:
        """At start-up: runs left unfinished by the last process are interrupted;
        votes are closed, failed or resumed (stories.votes)."""
        runs = await self.store.interrupt_unfinished(INTERRUPTED)
        if runs:
            log.warning("%d parts were interrupted by the last shutdown", len(runs))
        await self.votes.recover()
        return runs

    async def wait_idle(self, within: float | None = None) -> None:
        """Wait until every run's outcome is stored (at shutdown, with a bound);
        then stop the votes' timers (open votes resume at the next start)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=within)
        await self.votes.aclose()

    @property
    def in_flight(self) -> int:
        return len(self._runs)

    # ---------------------------------------------------------------- running
    def _claim(self, part_id: int, kind: ClaimKind) -> _Claim:
        claim = _Claim(kind, asyncio.get_running_loop().create_future())
        self._claims[part_id] = claim
        return claim

    def _fail_claim(self, part_id: int, claim: _Claim, error: BaseException) -> None:
        if self._claims.get(part_id) is claim:
            del self._claims[part_id]
        claim.ready.set_exception(error if isinstance(error, Exception) else Cancelled())
        claim.ready.exception()  # retrieved: nobody may be waiting

    @staticmethod
    def _settle_claim(claim: _Claim, run: Run) -> None:
        claim.run = run
        claim.ready.set_result(run)

    async def _begin(
        self,
        story: Story,
        parent: Part,
        kind: RunKind,
        who: Requester,
        options: StoryOptions | None,
        replaces: Part | None,
        announce: Announce | None,
        *,
        slot: bool = True,  # False: another run of the same action holds the person's slot
        claim: ClaimKind | None = "continue",  # None: another run of the action claimed it
    ) -> Run:
        server = await self.servers.settings(who.guild_id)
        self.servers.check_channel(server, who.channel_id)
        if kind == "reroll":
            self.servers.check_reroll(server, who.member, who.user_id, story.author_id)
        else:
            self.servers.check_continue(server, who.member, who.user_id, story.author_id)
        genre = self._story_genre(story, who)
        asked = options or StoryOptions()
        # Without options, a part is as long as the one before (which fits the
        # limit it was written under; _fit makes it fit today's).
        previous = (parent.params or {}).get("max_new_tokens")
        options = options or StoryOptions(max_new_tokens=previous)
        params = genre.params(**asdict(options) | {"genre": None}).with_seed()
        pool = await self._pool_for(genre)
        params = _fit(params, asked, pool)
        path = await self.store.path_to(parent.id)
        if any(part.hidden for part in path):
            raise PartHidden()
        if any(part.candidate for part in path):
            raise NothingToContinue(
                N_("That option was not chosen by the vote: continue the story's chosen part.")
            )
        previous_text = "".join(part.text for part in path)
        request = GenerationRequest(
            previous_text,
            params,
            primer=genre.primer,
            memory=story.memory,
            authors_note=story.authors_note,
        )
        reservation = pool.reserve(request)  # validates it, as for a new story
        try:
            release = self._take_slot(who, self.servers.limits(server)) if slot else (lambda: None)
        except BaseException:
            reservation.release()
            raise
        try:
            record = await self.store.create_run(
                story.id,
                parent.id,
                kind,
                requested_by=who.user_id,
                seed=params.seed,
                replaces_id=replaces.id if replaces else None,
                claim=claim is not None,
            )
        except BaseException as error:
            reservation.release()
            release()
            if isinstance(error, Claimed) and claim is not None:
                raise _lost_claim(error, claim) from None
            raise
        run = Run(record, story, parent, genre, previous_text, len(path), replaces)
        run.release_slot = release
        run.source = who.source
        run.cooldown_s = self.servers.limits(server).cooldown_s
        run.words = self.servers.content_filter(server)
        run.memory, run.authors_note = story.memory, story.authors_note
        await self._launch(run, pool, request, reservation, announce)
        return run

    async def _launch(
        self,
        run: Run,
        pool: GenerationPool,
        request: GenerationRequest,
        reservation: Reservation,
        announce: Announce | None,
        *,
        new_story: bool = False,
        server: GuildSettings | None = None,
    ) -> None:
        """Show the run (if the front-end asks to), then queue it and follow it."""
        telemetry.story_id.set(run.story.id)  # in this request's log lines from here on
        run.predicted_position = pool.predicted_position()
        run.announced = announce is not None
        self._runs[run.id] = run
        if announce is not None:
            try:
                await announce(run)
            except BaseException:
                # Nothing was generated; leave no trace of the attempt.
                reservation.release()
                run.release_slot()
                del self._runs[run.id]
                if new_story:
                    await asyncio.shield(self.store.delete_story(run.story.id))
                    await asyncio.shield(self.servers.give_back_story(server))
                else:
                    await asyncio.shield(self.store.delete_run(run.id))
                raise
        error: GenerationError | None = None
        if run.cancel_requested:  # its Cancel button was pressed while it was shown
            reservation.release()
            error = Cancelled()
        else:
            try:
                run.ticket = pool.submit(request, reservation)
            except GenerationError as refused:  # the pool closed while the run was shown
                reservation.release()
                error = refused
        self._started_now(run.requested_by, run.cooldown_s)
        task = asyncio.create_task(self._follow_and_save(run, error), name=f"run-{run.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info(
            "story %d: run %d (%s) queued at position %d (seed %d, ticket %s)",
            run.story.id,
            run.id,
            run.kind,
            run.position,
            run.seed,
            run.ticket.id if run.ticket else "-",
        )

    async def _follow_and_save(self, run: Run, refused: GenerationError | None) -> None:
        """Follow the run to its end, record the end, then tell its readers: whoever
        reacts to the outcome (a Retry click, a continue) sees the state stored."""
        state: Status | None = "failed"
        error: BaseException | None = refused
        outcome: PartOutcome | None = None
        try:
            if refused is not None:
                raise refused
            assert run.ticket is not None
            async for position in run.ticket.positions():
                if position == 0:
                    run.state = "generating"
                    await self._record(run, "generating", None)
                    if run.deleted:
                        raise NotFound(f"run {run.id} was deleted")
            result = await run.ticket.result()
            text, masked = run.words.mask(join_text(run.previous_text, result.text))
            if masked:
                await self.servers.count(run.story.guild_id, "masked")
                log.info("story %d: run %d's text was masked", run.story.id, run.id)
            part = await self.store.finish_run(
                run.id,
                GeneratedPart(
                    text=text,
                    masked=masked,
                    memory=run.memory,
                    authors_note=run.authors_note,
                    requested_by=run.requested_by,
                    params={k: v for k, v in asdict(run.ticket.params).items() if k != "seed"},
                    seed=result.seed,
                    model_id=result.model_id,
                    prompt_tokens=result.prompt_tokens,
                    new_tokens=result.new_tokens,
                    queued_s=result.queued_s,
                    generation_s=result.generation_s,
                    finish_reason=result.finish_reason,
                ),
            )
            story = await self.store.get_story(run.story.id)
            state, error = "done", None
            outcome = PartOutcome(story, part, run.previous_text, result)
            log.info(
                "story %d: part %d (run %d), %d tokens in %.2f s",
                run.story.id,
                part.id,
                run.id,
                result.new_tokens,
                result.generation_s,
            )
        except Cancelled as cancelled:
            state, error = "cancelled", cancelled
        except PoolClosed as closed:  # shutting down: what waited, or ran out of grace
            state, error = "interrupted", closed
        except NotFound:  # the story or the part it continues was deleted meanwhile
            run.deleted = True
        except (GenerationError, StorageError) as failed:  # timed out, failed, disk full
            error = failed
        except Exception:
            log.exception("story %d: run %d could not complete", run.story.id, run.id)
            error = GenerationError(N_("Something went wrong while writing this part."))
        finally:
            if run.ticket is not None and not run.ticket.done():
                run.ticket.cancel()  # nobody will store or see what it writes
            if outcome is None and error is None and not run.deleted:
                # The task itself was cancelled (never at shutdown, which waits).
                state, error = "interrupted", PoolClosed(INTERRUPTED)
            if state is not None and state != "done" and not run.deleted:
                await self._record(run, state, str(error) if error else None)
            if run.deleted:
                state, error = None, StoryDeleted()
            run.state = state or "cancelled"
            self._forget(run)
            self.observer.request_ended(
                run.source,
                "story" if outcome is not None else outcome_of(error or StoryDeleted()),
                outcome.result if outcome is not None else None,
            )
            if outcome is not None:
                run.done.set_result(outcome)
            else:
                run.done.set_exception(error or StoryDeleted())
                run.done.exception()  # retrieved: a front-end that never looks is fine

    async def _record(self, run: Run, state: Status, error: str | None) -> None:
        try:
            await asyncio.shield(self.store.set_run_state(run.id, state, error))
        except NotFound:
            run.deleted = True
        except StorageError as failed:
            log.warning(
                "story %d: could not record run %d as %s: %s", run.story.id, run.id, state, failed
            )

    def _forget(self, run: Run) -> None:
        self._runs.pop(run.id, None)
        run.release_slot()
        for part_id, claim in list(self._claims.items()):
            if claim.run is run:
                del self._claims[part_id]

    # ----------------------------------------------------------------- reading
    def running(self, run_id: int) -> Run | None:
        """The run with this id if it is in flight."""
        return self._runs.get(run_id)

    async def list_stories(
        self, user_id: int, *, page: int = 0, per_page: int = 10, genre: str | None = None
    ) -> StoryPage:
        if genre is not None:
            self.genres.get(genre)  # unknown genre: a clear error, not an empty page
        return await self.store.list_stories(
            user_id, limit=per_page, offset=page * per_page, genre=genre
        )

    async def story(self, story_id: int) -> tuple[Story, list[Part], list[Part]]:
        """The story, all its parts, and the path to its newest part. A part hidden
        after reports shows only that it was removed, wherever this is read
        (/mystories, the HTTP interface, exports)."""
        story = await self.store.get_story(story_id)
        parts = [
            replace(part, text=REMOVED_TEXT) if part.hidden else part
            for part in await self.store.story_parts(story_id)
        ]
        by_id = {part.id: part for part in parts}
        # Walk up from the newest part (the parts are all loaded); a vote's options
        # not chosen are never the story's branch.
        path = [next(part for part in reversed(parts) if not part.candidate)]
        while path[-1].parent_id is not None:
            path.append(by_id[path[-1].parent_id])
        return story, parts, path[::-1]

    # ----------------------------------------------------------------- notes
    async def set_notes(
        self,
        story_id: int,
        who: Requester,
        memory: str | None = None,
        authors_note: str | None = None,
    ) -> Story:
        """Change a story's memory and author's note (None: keep it), from its
        next part on. Its author may; the server's admins may; anyone in the
        channel may where the server allows it."""
        story = await self.store.get_story(story_id)
        server = await self.servers.settings(story.guild_id)
        if not (
            who.user_id is None
            or who.user_id == story.author_id
            or who.member.admin
            or (server is not None and server.notes_by_anyone)
        ):
            raise NotAllowed(N_("Only the story's author can change its notes here."))
        words = self.servers.content_filter(server)
        memory, note = self._check_notes(
            story.memory if memory is None else memory,
            story.authors_note if authors_note is None else authors_note,
            words,
        )
        updated = await self.store.set_notes(story_id, memory, note)
        log.info("story %d: notes changed by %s", story_id, who.user_id)
        return updated

    # ------------------------------------------------------------ moderation
    async def report(self, part_id: int, who: Requester) -> ReportTally:
        """A member reports a part; past the server's threshold it is hidden
        everywhere until an admin restores or deletes it."""
        if who.user_id is None:
            raise NotAllowed(N_("Reports come from members of a server."))
        part = await self.store.get_part(part_id)
        story = await self.store.get_story(part.story_id)
        tally = await self.servers.report(story.guild_id, part_id, who.user_id, who.member)
        if tally.hidden and not part.hidden:
            await self.servers.count(story.guild_id, "hidden")
            log.info("story %d: part %d hidden after reports", story.id, part_id)
        return tally

    async def restore_part(self, part_id: int, who: Requester) -> Part:
        self._check_admin(who)
        await self.servers.guilds.restore(part_id)
        log.info("part %d restored by %s", part_id, who.user_id)
        return await self.store.get_part(part_id)

    async def delete_part(self, part_id: int, who: Requester) -> int:
        """An admin deletes a reported part (and what was written after it)."""
        self._check_admin(who)
        deleted = await self.servers.guilds.delete_part(part_id)
        await self._stop_orphans()
        log.info("part %d deleted by %s (%d parts)", part_id, who.user_id, deleted)
        return deleted

    @staticmethod
    def _check_admin(who: Requester) -> None:
        if who.user_id is not None and not who.member.admin:
            raise NotAllowed(N_("Only the server's admins can do that."))

    async def database_state(self) -> tuple[bool, str | None]:
        """For readiness probes: whether the database answers, and what keeps it
        from taking writes now (None: nothing)."""
        try:
            await self.store.schema_version()
            return True, await self.store.write_problem()
        except Exception as error:  # any failure means not ready; the probe says which
            return False, str(error) or type(error).__name__

    async def describe_part(self, part_id: int) -> PartView:
        part = await self.store.get_part(part_id)
        story = await self.store.get_story(part.story_id)
        path = await self.store.path_to(part_id)
        return PartView(
            story,
            part,
            len(path) - 1,
            self._title(story),
            path[0].text if len(path) == 2 else None,
        )

    async def describe_vote(self, vote_id: int) -> VoteView:
        record = await self.votes.store.get(vote_id)
        story = await self.store.get_story(record.story_id)
        return VoteView(record, story, self._title(story))

    async def describe_option(self, part_id: int) -> tuple[int, VoteView] | None:
        """(number, its vote) for a part written as a vote's option."""
        found = await self.votes.store.of_part(part_id)
        if found is None:
            return None
        vote_id, number = found
        return number, await self.describe_vote(vote_id)

    async def describe_run(self, run_id: int) -> RunView:
        record = await self.store.get_run(run_id)
        story = await self.store.get_story(record.story_id)
        path = await self.store.path_to(record.parent_id)
        return RunView(
            story, record, len(path), self._title(story), path[0].text if len(path) == 1 else None
        )

    def _title(self, story: Story) -> str:
        return self.genres.get(story.genre).title if story.genre in self.genres else story.genre

    async def export(self, story_id: int, fmt: str = "md") -> str:
        story, parts, path = await self.story(story_id)
        if fmt == "md":
            return export.to_markdown(story, path)
        if fmt == "txt":
            return export.to_text(path)
        if fmt == "json":
            return export.dumps(export.to_json(story, parts, path))
        raise InvalidRequest(f"Unknown export format {fmt!r}: use md, txt or json.")


__all__ = [
    "PartOutcome",
    "PartView",
    "Requester",
    "Run",
    "RunView",
    "Started",
    "StoryOptions",
    "StoryService",
    "join_text",
]
