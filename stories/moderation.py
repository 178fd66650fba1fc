"""The content filter: blocked terms in prompts and in generated text (issue 20).

Text is normalised first, so one entry in `blocklist.txt` also catches its
variants: case, accents and look-alike letters (NFKD, casefold, a small table
of Cyrillic and Greek look-alikes), digits and symbols for letters inside a
word ("n1gg3r", "$pic"), invisible characters ("nig\u200bger"), letters spelled
out one by one ("n i g g e r", "f.a.g") and a trailing "s". Separators between
words become one space, so "sand-nigger" and "sand  nigger" are one phrase.

One Aho-Corasick automaton (pyahocorasick, in C) then finds every term in one
pass, however many a server adds. Terms and text are padded with a space, so
a term only matches whole words of the normalised text: "class", "assassin",
"Scunthorpe", "cocktail" and "raccoon" never match, whatever the list holds.
Words with an innocent common use stay off the built-in list, and a few
phrases are allowed where a listed word has one ("spic and span", "Maine
Coon", "a chink of light"); see the file's header.

Masking replaces every character of a match except whitespace with `MASK`, so
the text keeps its length (Discord's limits count characters) and its lines.
`StreamMasker` does the same for text that arrives in pieces.
"""

from __future__ import annotations

import bisect
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import NamedTuple, overload

import ahocorasick

from generation.messages import N_

BLOCKLIST = Path(__file__).resolve().parent / "blocklist.txt"
MASK = "█"  # U+2588: plainly redacted, and no Markdown meaning in Discord
MAX_TERM_LENGTH = 50
ALLOW = "allow:"  # a blocklist line that names an innocent phrase, not a term
_CACHED_SERVER_LISTS = 256  # with_terms: filters kept, least recently used dropped

# Inside a word that has a letter, these stand for letters ("1990" stays digits).
_LEET = str.maketrans("0123456789@$!|", "oizeasgtbgasii")
# Lowercase Cyrillic and Greek letters drawn like Latin ones (after casefold).
_LOOK_ALIKES = str.maketrans(
    {
        **dict(zip("аеорсухіјѕԁԛԝкмнтвпг", "aeopcyxijsdqwkmhtbnr", strict=True)),  # Cyrillic
        **dict(zip("αβεικνορτυχ", "abeikvoptux", strict=True)),  # Greek
    }
)
# Blank-looking letters (category Lo/So) that people use as invisible spacers.
_INVISIBLE = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800"}
_FOLD_CACHE_LIMIT = 20_000  # distinct characters remembered by the fold table

# A word: letters, digits, @ and $; !, | and apostrophes join two such runs
# ("n!gger", "don't"). Everything else separates words.
_WORD = re.compile(r"[\w@$]+(?:[!|'’][\w@$]+)*")
_APOSTROPHES = re.compile(r"['’]")
# Letters spelled out: at most this many separators between two, and the same
# ones, but for whitespace, throughout ("n i g", "n. i. g", not "d o g, c.a.t").
_SPELLED_GAP = 3


def _fold_char(char: str) -> str:
    """One character's matching form: '' for invisible ones, base letters
    without accents, casefolded, compatibility forms unfolded ("ﬁ" -> "fi")."""
    if char in _INVISIBLE or unicodedata.category(char) == "Cf":
        return ""
    if char == "_":
        return " "  # a separator: \w in _WORD would otherwise join on it
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", char).casefold())
    bare = "".join(c for c in decomposed if unicodedata.category(c) not in ("Mn", "Me"))
    return bare.translate(_LOOK_ALIKES)


class _FoldTable(dict[int, str]):
    """ord(c) -> c's folded form for `str.translate`, computed once per character."""

    def __missing__(self, key: int) -> str:
        folded = _fold_char(chr(key))
        if len(self) < _FOLD_CACHE_LIMIT:
            self[key] = folded
        return folded


_FOLD = _FoldTable()


def _fold(text: str) -> tuple[str, list[int] | None]:
    """The folded text, and for each of its characters the index of the original
    one it came from; None when that is the identity (ASCII text, most text)."""
    folded = text.translate(_FOLD)
    if text.isascii() or all(len(_FOLD[ord(c)]) == 1 for c in set(text)):
        return folded, None
    origin: list[int] = []
    for index, char in enumerate(text):
        origin.extend([index] * len(_FOLD[ord(char)]))
    return folded, origin


class IndexMap(Sequence[int]):
    """For each character of a normalised text, the index of the original
    character it came from. Kept as stretches that map one to one, so building
    it costs a few appends per word."""

    def __init__(
        self, starts: list[int], sources: list[int], length: int, origin: list[int] | None
    ) -> None:
        self._starts = starts  # where each stretch begins in the normalised text
        self._sources = sources  # and where it begins in the folded text
        self._length = length
        self._origin = origin  # folded -> original, None for the identity

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> list[int]: ...
    def __getitem__(self, index: int | slice) -> int | list[int]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._length))]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError("normalised index out of range")
        stretch = bisect.bisect_right(self._starts, index) - 1
        folded = self._sources[stretch] + index - self._starts[stretch]
        return folded if self._origin is None else self._origin[folded]


class _Normalised(NamedTuple):
    text: str
    index_map: IndexMap
    hard: list[int]  # word starts a stream may cut at (see StreamMasker), ascending
    # More text may still change the end: from `tail` on, text[tail:] may become
    # any of `tail_forms` or something that starts with one of them.
    tail: int
    tail_forms: frozenset[str]


def _normalise(text: str) -> _Normalised:
    folded, origin = _fold(text)
    out: list[str] = []  # pieces of the normalised text
    starts: list[int] = []  # where each stretch that maps one to one begins
    sources: list[int] = []  # and the folded index it begins at
    hard: list[int] = []
    size = 0
    spelled: list[tuple[str, int]] = []  # a run of one-character words: (char, folded index)
    spelled_end = -1
    spelled_gap = ""  # what separates its letters, less whitespace: "", ".", "-"

    def piece(chars: str, source: int, new_word: bool = False, is_hard: bool = True) -> None:
        # A new word starts with one space for whatever separated it from the last
        # one; the space maps to the separator character just before the word.
        nonlocal size
        if new_word and size:
            starts.append(size)
            sources.append(source - 1)
            out.append(" ")
            size += 1
        else:
            starts.append(size)
            sources.append(source)
        if new_word and is_hard:
            hard.append(size)
        out.append(chars)
        size += len(chars)

    def flush_spelled() -> None:
        if len(spelled) == 1 or not any(c.isalpha() for c, _ in spelled):
            for char, at in spelled:  # not spelled out: words of their own
                piece(char, at, new_word=True)
        else:
            letters = [(c.translate(_LEET), at) for c, at in spelled]
            # "you are a n i g g e r": a leading "a" or "I" is most likely a word.
            if len(letters) >= 4 and spelled[0][0] in "ai":
                piece(*letters[0], new_word=True)
                letters = letters[1:]
                piece(*letters[0], new_word=True, is_hard=False)
            else:
                piece(*letters[0], new_word=True)
            for char, at in letters[1:]:
                piece(char, at)
        spelled.clear()

    for found in _WORD.finditer(folded):
        word, at = found.group(), found.start()
        if len(word) == 1:
            gap = folded[spelled_end:at]
            if spelled and (
                len(gap) > _SPELLED_GAP or (len(spelled) > 1 and gap.strip() != spelled_gap)
            ):
                flush_spelled()  # "d o g, c.a.t": two runs
            spelled_gap = gap.strip()
            spelled.append((word, at))
            spelled_end = at + 1
            continue
        if spelled:
            flush_spelled()
        if word.isalpha():  # nearly every word: piece(word, at, new_word=True), inlined
            if size:
                starts.append(size)
                sources.append(at - 1)
                out.append(" ")
                size += 1
            else:
                starts.append(0)
                sources.append(at)
            hard.append(size)
            out.append(word)
            size += len(word)
            continue
        has_letter = any(c.isalpha() for c in word)
        offset = 0
        for part in _APOSTROPHES.split(word):  # "don't" -> "dont"
            piece(part.translate(_LEET) if has_letter else part, at + offset, new_word=not offset)
            offset += len(part) + 1
    # The end: a last word may grow, a letter may turn its digits into letters
    # ("1" + "gger"), and a run of single letters may grow and change shape.
    forms = set()
    if spelled:
        tail = size + 1 if size else 0
        chars = "".join(c for c, _ in spelled)
        forms.add(chars.translate(_LEET))
        if chars[0] in "ai":
            forms.add(f"{chars[0]} {chars[1:].translate(_LEET)}")
        flush_spelled()
    else:
        tail = hard[-1] if hard else 0
    normalised = "".join(out)
    forms |= {normalised[tail:], normalised[tail:].translate(_LEET)}
    index_map = IndexMap(starts, sources, size, origin)
    return _Normalised(normalised, index_map, hard, tail, frozenset(forms))


def normalise(text: str) -> tuple[str, IndexMap]:
    """The form text is matched in, and where each of its characters came from.

    >>> normalise("Sh1ps @head in 1990, M.A.Y-day!")[0]
    'ships ahead in 1990 may day'
    """
    normalised = _normalise(text)
    return normalised.text, normalised.index_map


def normalise_term(term: str) -> str:
    """A term's matching form; ValueError (with a message for an admin) when it
    is empty, longer than MAX_TERM_LENGTH characters, or all punctuation."""
    term = term.strip()
    if not term:
        raise ValueError(N_("The term is empty."))
    if len(term) > MAX_TERM_LENGTH:
        raise ValueError(
            N_("The term is too long: at most {limit} characters.", limit=MAX_TERM_LENGTH)
        )
    normalised = _normalise(term).text
    if not normalised:
        raise ValueError(N_("The term {term} has no letters or digits to match.", term=repr(term)))
    return normalised


@dataclass(frozen=True)
class Match:
    """A blocked term found in a text: text[start:end] is what matched."""

    start: int
    end: int
    term: str  # the list's entry, normalised (for logs; never show it to the author)


@dataclass(frozen=True)
class _Hit:
    start: int  # in the normalised text
    end: int
    term: str
    allowed: bool  # an allowed phrase, not a blocked term


class ContentFilter:
    """Blocked terms (and allowed phrases), compiled once; safe to share."""

    def __init__(self, terms: Iterable[str], allow: Iterable[str] = ()) -> None:
        self.terms = frozenset(normalise_term(term) for term in terms)
        self.allowed = frozenset(normalise_term(p) for p in allow) - self.terms
        self._automaton = ahocorasick.Automaton(ahocorasick.STORE_ANY, ahocorasick.KEY_STRING)
        self._longest = 0  # the longest key, padding included
        for phrase in self.allowed:
            self._add(phrase, phrase, allowed=True)
        for term in sorted(self.terms):
            self._add(term, term, allowed=False)
            if " " in term:  # "sand nigger" -> "sandnigger"
                self._add(term.replace(" ", ""), term, allowed=False)
        if self._longest:
            self._automaton.make_automaton()
        self._servers: OrderedDict[frozenset[str], ContentFilter] = OrderedDict()
        self._servers_lock = threading.Lock()

    def _add(self, key: str, term: str, allowed: bool) -> None:
        # With an s too: plurals, possessives ("fag's" -> "fags", "fag ends").
        # Blocked terms are added after allowed phrases, and win where both are.
        for variant in (key, key + "s"):
            padded = f" {variant} "  # whole words only
            self._automaton.add_word(padded, (len(padded), term, allowed))
            self._longest = max(self._longest, len(padded))

    @classmethod
    def from_file(cls, path: Path) -> ContentFilter:
        terms, allow = read_blocklist(path)
        return cls(terms, allow)

    @classmethod
    def builtin(cls) -> ContentFilter:
        """The shipped list (stories/blocklist.txt), built once per process."""
        return _builtin()

    def with_terms(self, extra: Iterable[str]) -> ContentFilter:
        """This filter plus a server's own terms. Built once per distinct list and
        kept (the last few hundred lists), so call it for every check."""
        key = frozenset(normalise_term(term) for term in extra) - self.terms
        if not key:
            return self
        with self._servers_lock:
            cached = self._servers.get(key)
            if cached is not None:
                self._servers.move_to_end(key)
                return cached
        built = ContentFilter(self.terms | key, self.allowed)
        with self._servers_lock:
            self._servers[key] = built
            while len(self._servers) > _CACHED_SERVER_LISTS:
                self._servers.popitem(last=False)
        return built

    def _hits(self, normalised: str) -> list[_Hit]:
        if not self._longest:
            return []
        hits = []
        for last, (length, term, allowed) in self._automaton.iter(f" {normalised} "):
            # `last` indexes the padded text: the term is normalised[last-length+1 : last-1]
            hits.append(_Hit(last - length + 1, last - 1, term, allowed))
        return hits

    def _blocked(self, hits: list[_Hit]) -> list[_Hit]:
        allowed = [hit for hit in hits if hit.allowed]
        return [
            hit
            for hit in hits
            if not hit.allowed
            and not any(a.start <= hit.start and hit.end <= a.end for a in allowed)
        ]

    def matches(self, text: str) -> bool:
        """Whether text holds a blocked term (a prompt to refuse)."""
        return bool(self._blocked(self._hits(_normalise(text).text)))

    def find(self, text: str) -> list[Match]:
        """Every blocked term in text, as spans of the original text, in order."""
        normalised = _normalise(text)
        return _spans(text, normalised.index_map, self._blocked(self._hits(normalised.text)))

    def mask(self, text: str) -> tuple[str, bool]:
        """text with each blocked term's characters (not its spaces) replaced by
        MASK, and whether anything was."""
        found = self.find(text)
        return _apply(text, found), bool(found)

    def stream(self) -> StreamMasker:
        return StreamMasker(self)


@cache
def _builtin() -> ContentFilter:
    return ContentFilter.from_file(BLOCKLIST)


def read_blocklist(path: Path) -> tuple[list[str], list[str]]:
    """(terms, allowed phrases) from a blocklist file; ValueError names the line."""
    terms: list[str] = []
    allow: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        target = terms
        if line.startswith(ALLOW):
            line, target = line.removeprefix(ALLOW).strip(), allow
        try:
            normalise_term(line)
        except ValueError as error:
            raise ValueError(f"{path}:{number}: {error}") from None
        target.append(line)
    return terms, allow


def _spans(text: str, index_map: IndexMap, hits: list[_Hit]) -> list[Match]:
    found = []
    for hit in sorted(hits, key=lambda h: (h.start, h.end)):
        start, end = index_map[hit.start], index_map[hit.end - 1] + 1
        # Take the accents and invisible characters that trail the last letter.
        while end < len(text) and _FOLD[ord(text[end])] == "":
            end += 1
        found.append(Match(start, end, hit.term))
    return found


def _apply(text: str, found: list[Match]) -> str:
    if not found:
        return text
    chars = list(text)
    for match in found:
        for i in range(match.start, min(match.end, len(chars))):
            if not chars[i].isspace():
                chars[i] = MASK
    return "".join(chars)


class StreamMasker:
    """Masks text that arrives in pieces (streamed generation).

    `push(delta)` returns what is safe to show now; `finish()` the rest. Shown
    together they are exactly `mask(whole text)`. Held back: the last word
    (it may still grow, "Scun" + "thorpe"), and from the earliest word where a
    listed term or allowed phrase could still begin. Once nothing can change a
    stretch's masking any more it is shown, so the delay is a word or two, more
    only inside a possible match.
    """

    def __init__(self, content_filter: ContentFilter) -> None:
        self._filter = content_filter
        self._pending = ""
        self.masked = False  # whether anything shown so far was masked

    def push(self, delta: str) -> str:
        self._pending += delta
        return self._release(final=False)

    def finish(self) -> str:
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        text = self._pending
        normalised = _normalise(text)
        hits = self._filter._hits(normalised.text)
        cut = len(text) if final else self._safe_cut(normalised, hits)
        if not cut:
            return ""
        found = _spans(text, normalised.index_map, self._filter._blocked(hits))
        found = [match for match in found if match.start < cut]
        self.masked = self.masked or bool(found)
        shown = _apply(text[:cut], found)
        self._pending = text[cut:]
        return shown

    def _safe_cut(self, normalised: _Normalised, hits: list[_Hit]) -> int | None:
        """The original index of the latest word start before which nothing can
        change any more, or None."""
        words, tail = normalised.text, normalised.tail
        upper = tail  # the end may still change
        automaton, longest = self._filter._automaton, self._filter._longest
        start = words.rfind(" ", 0, tail - 1) + 1 if tail else 0
        while 0 <= start < tail and tail - start < longest:
            # Could a term or an allowed phrase begin at this word?
            if any(
                automaton.match(f" {words[start:tail]}{form}") for form in normalised.tail_forms
            ):
                upper = start
            start = words.rfind(" ", 0, start - 1) + 1 if start else -1
        for cut in reversed(normalised.hard):
            # Not between letters spelled out, nor inside a match found already.
            if 0 < cut <= upper and not any(h.start < cut < h.end for h in hits):
                return normalised.index_map[cut]
        return None
