"""Candidate spans, context scoring and overlap resolution: the leak-proof core of detection."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import regex

# Presidio's LemmaContextAwareEnhancer defaults: a context word raises a score by 0.35, to at least 0.4.
CONTEXT_SIMILARITY_FACTOR = 0.35
MIN_SCORE_WITH_CONTEXT = 0.4
CONTEXT_WORDS_BEFORE = 5
CONTEXT_WORDS_AFTER = 3
_CONTEXT_CHARS = 80

# Words for context: numbers are skipped, so the digit groups of a value do not push context words out of reach.
_WORD = regex.compile(r"[^\W\d]\w*")
# After a value, its sentence ends at . ! ? followed by a space, or a line break. Before a value, a full stop
# counts only when a capital follows, so that "Tel. 0116 496 0207" keeps "Tel" as context, and line breaks do not
# count, so that a "phone" column header still reaches the values below it.
_SENTENCE_END = regex.compile(r"[.!?](?=\s|$)|\n")
_SENTENCE_END_BACKWARDS = regex.compile(r"[.!?]\s+(?=\p{Lu})", flags=regex.REVERSE)
_WHITESPACE = regex.compile(r"\s")
_WHITESPACE_BACKWARDS = regex.compile(r"\s", flags=regex.REVERSE)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One detector's finding, before overlaps are resolved. Offsets index the analysed text."""

    entity: str
    start: int
    end: int
    score: float


@dataclass(frozen=True, slots=True)
class Span:
    """A resolved region to replace. Never overlaps another Span of the same result."""

    entity: str
    start: int
    end: int


def words_around(text: str, start: int, end: int) -> list[str]:
    """The few words around text[start:end], lower-cased, nearest first: those before it, then those after it.

    Like Presidio, mostly the words before the value count; we also read a few words after it, but only up to the
    end of its sentence, and words before it only from its own sentence, so that "seed 2091420763. Call me" does
    not make the seed a phone number.
    """
    window_start = max(0, start - _CONTEXT_CHARS)
    boundary = _SENTENCE_END_BACKWARDS.search(text, window_start, start)
    if boundary is not None:
        window_start = boundary.end()
    window_end = min(len(text), end + _CONTEXT_CHARS)
    boundary = _SENTENCE_END.search(text, end, window_end)
    if boundary is not None:
        window_end = boundary.start()
    before = _WORD.findall(text, window_start, start)[-CONTEXT_WORDS_BEFORE:]
    after = _WORD.findall(text, end, window_end)[:CONTEXT_WORDS_AFTER]
    return [word.lower() for word in [*reversed(before), *after]]


def is_context_word(word: str, context_word: str) -> bool:
    """`word` (lower-cased) is `context_word` or, for context words of three letters or more, starts with it."""
    return word == context_word or (len(context_word) >= 3 and word.startswith(context_word))


@lru_cache(maxsize=256)
def _matcher(context_words: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
    return frozenset(context_words), tuple(word for word in context_words if len(word) >= 3)


def has_context(text: str, start: int, end: int, context_words: Sequence[str]) -> bool:
    """True when one of `context_words` is among the few words around text[start:end] (case-insensitive)."""
    exact, prefixes = _matcher(tuple(context_words))
    return any(word in exact or word.startswith(prefixes) for word in words_around(text, start, end))


def preceding_words(text: str, start: int, count: int) -> set[str]:
    """The last `count` words (letters, lower-cased) before text[start], within a short window."""
    return {word.lower() for word in _WORD.findall(text, max(0, start - _CONTEXT_CHARS // 2), start)[-count:]}


def boosted_score(score: float) -> float:
    return max(min(score + CONTEXT_SIMILARITY_FACTOR, 1.0), MIN_SCORE_WITH_CONTEXT)


def resolve_overlaps(candidates: Iterable[Candidate]) -> list[Span]:
    """Merge overlapping candidates so that no detected character can leak.

    Candidates that overlap (directly or through a chain) form one cluster, replaced as one span covering the union
    of their characters. The cluster takes the entity type of its widest member, the higher score breaking ties.
    Spans that merely touch (one ends where the next starts) stay separate: each gets its own placeholder, unlike
    Presidio's anonymizer, which merges same-type neighbours separated by whitespace into one.
    """
    ordered = sorted(candidates, key=lambda c: (c.start, -c.end))
    spans: list[Span] = []
    cluster: list[Candidate] = []
    cluster_end = -1
    for candidate in ordered:
        if candidate.start >= candidate.end:
            continue
        if cluster and candidate.start < cluster_end:
            cluster.append(candidate)
            cluster_end = max(cluster_end, candidate.end)
            continue
        if cluster:
            spans.append(_merge(cluster, cluster_end))
        cluster = [candidate]
        cluster_end = candidate.end
    if cluster:
        spans.append(_merge(cluster, cluster_end))
    return spans


def _merge(cluster: list[Candidate], cluster_end: int) -> Span:
    winner = max(cluster, key=lambda c: (c.end - c.start, c.score))
    return Span(winner.entity, cluster[0].start, cluster_end)


def token_windows(
    text: str, anchors: regex.Pattern[str], accept: Callable[[str], bool] | None = None
) -> list[tuple[int, int]]:
    """Whitespace-delimited regions around every match of `anchors`, merged, with the bounding whitespace included.

    For entity types whose values never contain whitespace (emails, IP addresses), scanning only these windows
    finds exactly what scanning the whole text would, because the bounding whitespace is kept for look-arounds.
    `accept`, if given, filters the anchor matches.
    """
    windows: list[tuple[int, int]] = []
    position = 0
    length = len(text)
    while True:
        anchor = anchors.search(text, position)
        if anchor is None:
            break
        if accept is not None and not accept(anchor.group()):
            position = anchor.end()
            continue
        before = _WHITESPACE_BACKWARDS.search(text, 0, anchor.start())
        after = _WHITESPACE.search(text, anchor.end())
        start = before.start() if before else 0
        end = after.end() if after else length
        if windows and start <= windows[-1][1]:
            windows[-1] = (windows[-1][0], max(end, windows[-1][1]))
        else:
            windows.append((start, end))
        position = max(end, anchor.end())
        if position >= length:
            break
    return windows
