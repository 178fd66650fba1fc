"""The story use-cases that the bot and the HTTP interface both call.

Starting, continuing or rerolling records the request in storage, submits it
to the generation pool and returns a `Run`. The run's completion (storing the
part, setting the status) is owned by the service in a task of its own, so a
front-end that goes away (a closed HTTP connection, a deleted message) loses
nothing that was written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field

from generation.engines import ModelPools
from generation.errors import Cancelled, GenerationError, InvalidRequest, PoolClosed
from generation.pool import GenerationPool, Ticket
from generation.types import GenerationRequest, GenerationResult
from storage.models import Deleted, GeneratedPart, Part, Source, Status, Story, StoryPage
from storage.store import Store
from stories import export
from stories.errors import AgeRestricted, NotAllowed, NothingToContinue, UserLimit
from stories.genres import Genre, GenreRegistry

log = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 4000  # a prompt longer than this is refused, not silently cut
# Zero-width and other invisible characters: a prompt of only these is empty.
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


@dataclass(frozen=True)
class Requester:
    user_id: int | None  # None: the HTTP interface
    source: Source = "discord"
    guild_id: int | None = None
    channel_id: int | None = None
    age_restricted_ok: bool = False  # the channel allows age-restricted genres


@dataclass(frozen=True)
class PartOutcome:
    """A finished run: the stored part, the text it continues, the numbers."""

    story: Story
    part: Part
    previous_text: str  # the story's text before this part
    result: GenerationResult


@dataclass(eq=False)  # identity: runs live in sets
class Run:
    """One generation in flight, as seen by a front-end."""

    story: Story
    parent: Part
    genre: Genre
    ticket: Ticket
    previous_text: str
    kind: str  # "start", "continue", "reroll"
    requested_by: int | None
    part_number: int  # 1 for the first generated part
    done: asyncio.Future[PartOutcome] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    @property
    def seed(self) -> int:
        return self.ticket.seed

    @property
    def position(self) -> int:
        return self.ticket.position

    def positions(self) -> AsyncIterator[int]:
        return self.ticket.positions()

    def stream(self) -> AsyncIterator[str]:
        return self.ticket.stream()

    async def outcome(self) -> PartOutcome:
        return await asyncio.shield(self.done)

    def cancel(self) -> bool:
        return self.ticket.cancel()


def _fail(run: Run, error: BaseException) -> None:
    if not run.done.done():
        run.done.set_exception(error)
        run.done.exception()  # retrieved: a front-end that never looks is not an error


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
    ) -> None:
        self.store = store
        self.pool = pool  # the default model's
        self.models = models  # genre models, loaded on demand; None: one model for all
        self.genres = genres
        self.user_max_active = user_max_active
        self.user_cooldown_s = user_cooldown_s
        self._active: dict[int, set[Run]] = {}
        self._last_start: dict[int, float] = {}
        self._continuing: dict[int, asyncio.Future[Run]] = {}  # parent part id -> run in flight
        self._runs: dict[int, Run] = {}  # story id -> latest run in flight
        self._tasks: set[asyncio.Task[None]] = set()
        self.recovered: list[Story] = []
        # Slots taken by requests between their check and their launch: the check
        # and the launch are separated by awaits, so two quick requests must not
        # both pass the per-user limit.
        self._reserved: dict[int, int] = {}
        self._missing_models: set[str] = set()

    # ------------------------------------------------------------------ checks
    def _check_prompt(self, prompt: str) -> str:
        if not isinstance(prompt, str) or not prompt.translate(_INVISIBLE).strip():
            raise InvalidRequest("The prompt is empty: give the story a first line.")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InvalidRequest(f"The prompt is too long: at most {MAX_PROMPT_CHARS} characters.")
        return prompt.strip()

    def _check_user(self, who: Requester) -> None:
        if who.user_id is None:
            return
        active = len(self._active.get(who.user_id, set())) + self._reserved.get(who.user_id, 0)
        if active >= self.user_max_active:
            raise UserLimit(
                f"You already have {active} stories being written; "
                "wait for one to finish (or cancel it)."
            )
        last = self._last_start.get(who.user_id)
        if last is not None and self.user_cooldown_s:
            wait = self.user_cooldown_s - (time.monotonic() - last)
            if wait > 0:
                raise UserLimit(
                    f"Slow down a little: try again in {max(1, round(wait))} s.", retry_after=wait
                )

    def _genre(self, key: str | None, who: Requester) -> Genre:
        genre = self.genres.get(key)
        if genre.age_restricted and not who.age_restricted_ok:
            raise AgeRestricted(
                f"The {genre.title} genre is only available in age-restricted channels."
            )
        return genre

    @contextlib.contextmanager
    def _slot(self, who: Requester) -> Iterator[None]:
        """Check the per-user limits and hold a slot until the run is launched."""
        self._check_user(who)
        if who.user_id is None:
            yield
            return
        self._reserved[who.user_id] = self._reserved.get(who.user_id, 0) + 1
        try:
            yield
        finally:
            left = self._reserved[who.user_id] - 1
            if left:
                self._reserved[who.user_id] = left
            else:
                del self._reserved[who.user_id]

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
    async def start(self, prompt: str, options: StoryOptions, who: Requester) -> Run:
        """Start a story: validate, store it as queued, submit it."""
        prompt = self._check_prompt(prompt)
        genre = self._genre(options.genre, who)
        params = genre.params(**asdict(options))
        request = GenerationRequest(prompt, params, primer=genre.primer)
        self.pool.validate(request)  # refuse bad input before storing anything
        with self._slot(who):
            story, root = await self.store.create_story(
                prompt=prompt,
                genre=genre.key,
                author_id=who.user_id,
                source=who.source,
                guild_id=who.guild_id,
                channel_id=who.channel_id,
            )
            try:
                pool = await self._pool_for(genre)
                ticket = pool.submit(request)  # no await between: the pool cannot go away
            except GenerationError:
                await self.store.delete_story(story.id)  # a refused request leaves no row
                raise
            return self._launch(story, root, genre, ticket, prompt, "start", who.user_id, 1)

    async def continue_from(
        self, part_id: int, who: Requester, options: StoryOptions | None = None
    ) -> Run:
        """Write the next part after `part_id`. Two requests at once share one run."""
        in_flight = self._continuing.get(part_id)
        if in_flight is not None:
            return await asyncio.shield(in_flight)
        # Claim the part before the first await, so a second reaction arriving
        # meanwhile waits for this run instead of starting its own.
        claim: asyncio.Future[Run] = asyncio.get_running_loop().create_future()
        self._continuing[part_id] = claim
        try:
            parent = await self.store.get_part(part_id)
            story = await self.store.get_story(parent.story_id)
            run = await self._generate_under(story, parent, who, options, "continue")
        except BaseException as error:
            del self._continuing[part_id]
            claim.set_exception(error if isinstance(error, Exception) else Cancelled())
            claim.exception()
            raise
        claim.set_result(run)
        return run

    async def continue_story(
        self, story_id: int, who: Requester, options: StoryOptions | None = None
    ) -> Run:
        latest = await self.store.latest_part(story_id)
        return await self.continue_from(latest.id, who, options)

    async def reroll(self, part_id: int, who: Requester) -> Run:
        """A new version of a generated part (new seed), kept as its sibling."""
        part = await self.store.get_part(part_id)
        story = await self.store.get_story(part.story_id)
        if who.user_id is not None and story.author_id != who.user_id:
            raise NotAllowed("Only the story's author can reroll it.")
        if part.parent_id is None:
            raise NothingToContinue(
                "The prompt itself cannot be rerolled; continue the story instead."
            )
        parent = await self.store.get_part(part.parent_id)
        keep = StoryOptions(max_new_tokens=(part.params or {}).get("max_new_tokens"))
        return await self._generate_under(story, parent, who, keep, "reroll")

    async def _generate_under(
        self, story: Story, parent: Part, who: Requester, options: StoryOptions | None, kind: str
    ) -> Run:
        genre = self._genre(story.genre, who) if story.genre in self.genres else self.genres.default
        previous = (parent.params or {}).get("max_new_tokens")
        options = options or StoryOptions(max_new_tokens=previous)
        params = genre.params(**asdict(options) | {"genre": None})
        with self._slot(who):
            path = await self.store.path_to(parent.id)
            previous_text = "".join(part.text for part in path)
            request = GenerationRequest(previous_text, params, primer=genre.primer)
            pool = await self._pool_for(genre)
            ticket = pool.submit(request)
            await self.store.set_status(story.id, "queued")
            return self._launch(
                story, parent, genre, ticket, previous_text, kind, who.user_id, len(path)
            )

    def _launch(
        self,
        story: Story,
        parent: Part,
        genre: Genre,
        ticket: Ticket,
        previous_text: str,
        kind: str,
        user_id: int | None,
        part_number: int,
    ) -> Run:
        run = Run(story, parent, genre, ticket, previous_text, kind, user_id, part_number)
        if user_id is not None:
            self._active.setdefault(user_id, set()).add(run)
            self._last_start[user_id] = time.monotonic()
        self._runs[story.id] = run
        task = asyncio.create_task(self._complete(run), name=f"story-{story.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info(
            "story %d: %s queued at position %d (seed %d)",
            story.id,
            kind,
            ticket.position,
            ticket.seed,
        )
        return run

    async def _complete(self, run: Run) -> None:
        story_id = run.story.id
        status: Status = "failed"
        try:
            async for position in run.ticket.positions():
                if position == 0:
                    await self.store.set_status(story_id, "generating")
            result = await run.ticket.result()
            text = join_text(run.previous_text, result.text)
            part = await self.store.add_part(
                story_id,
                run.parent.id,
                GeneratedPart(
                    text=text,
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
                status="done",
            )
            story = await self.store.get_story(story_id)
            status = "done"
            run.done.set_result(PartOutcome(story, part, run.previous_text, result))
            log.info(
                "story %d: part %d, %d tokens in %.2f s",
                story_id,
                part.id,
                result.new_tokens,
                result.generation_s,
            )
        except Cancelled as error:
            status = "cancelled"
            _fail(run, error)
        except PoolClosed as error:
            status = "interrupted"
            _fail(run, error)
        except GenerationError as error:  # timed out, failed, or a storage problem
            _fail(run, error)
        except Exception:
            log.exception("story %d: could not complete", story_id)
            _fail(run, GenerationError("Something went wrong while saving the story."))
        finally:
            if not run.done.done():  # cancelled task (shutdown): never leave a waiter
                status = "interrupted"
                _fail(run, PoolClosed())
            if status != "done":
                try:
                    await self.store.set_status(story_id, status)
                except Exception:
                    log.exception("story %d: could not record status %s", story_id, status)
            if run.requested_by is not None:
                self._active.get(run.requested_by, set()).discard(run)
            claim = self._continuing.get(run.parent.id)
            if (
                claim is not None
                and claim.done()
                and not claim.exception()
                and claim.result() is run
            ):
                del self._continuing[run.parent.id]
            if self._runs.get(story_id) is run:
                del self._runs[story_id]

    def run_for(self, story_id: int) -> Run | None:
        return self._runs.get(story_id)

    async def cancel(self, story_id: int, who: Requester) -> bool:
        run = self._runs.get(story_id)
        if run is None:
            return False
        if who.user_id is not None and run.requested_by not in (who.user_id, None):
            raise NotAllowed("Only the person who asked for this part can cancel it.")
        return run.cancel()

    async def wait_idle(self) -> None:
        """Wait until every run's result is stored (used at shutdown)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ----------------------------------------------------------------- reading
    async def list_stories(
        self, user_id: int, *, page: int = 0, per_page: int = 10, genre: str | None = None
    ) -> StoryPage:
        if genre is not None:
            self.genres.get(genre)  # unknown genre: a clear error, not an empty page
        return await self.store.list_stories(
            user_id, limit=per_page, offset=page * per_page, genre=genre
        )

    async def story(self, story_id: int) -> tuple[Story, list[Part], list[Part]]:
        """The story, all its parts, and the path to its newest part."""
        story = await self.store.get_story(story_id)
        parts = await self.store.story_parts(story_id)
        by_id = {part.id: part for part in parts}
        path = [parts[-1]]  # walk up from the newest part: the parts are all loaded
        while path[-1].parent_id is not None:
            path.append(by_id[path[-1].parent_id])
        return story, parts, path[::-1]

    async def export(self, story_id: int, fmt: str = "md") -> str:
        story, parts, path = await self.story(story_id)
        if fmt == "md":
            return export.to_markdown(story, path)
        if fmt == "txt":
            return export.to_text(path)
        if fmt == "json":
            return export.dumps(export.to_json(story, parts, path))
        raise InvalidRequest(f"Unknown export format {fmt!r}: use md, txt or json.")

    async def delete_story(self, story_id: int, who: Requester) -> Deleted:
        story = await self.store.get_story(story_id)
        if who.user_id is not None and story.author_id != who.user_id:
            raise NotAllowed("Only the story's author can delete it.")
        run = self._runs.get(story_id)
        if run is not None:
            run.cancel()
        return await self.store.delete_story(story_id)

    async def forget(self, user_id: int) -> Deleted:
        for run in list(self._active.get(user_id, set())):
            run.cancel()
        return await self.store.delete_user(user_id)

    async def recover_interrupted(self) -> list[Story]:
        stories = await self.store.mark_interrupted()
        self.recovered = stories  # the bot tells their channels once it is connected
        if stories:
            log.warning("%d stories were interrupted by the last shutdown", len(stories))
        return stories


__all__ = ["PartOutcome", "Requester", "Run", "StoryOptions", "StoryService", "join_text"]
