"""FQDN selectors and the compiled per-endpoint matcher.

:func:`selector_matches` is the reference: one selector, Cilium's own anchored regex
(:func:`~acns_operator.fqdn.patterns.pattern_to_regex`). :func:`compile_selectors`
builds a :class:`Matcher` for the hot path, where one name is checked against all of
an endpoint's selectors (often hundreds) on every DNS query. It must agree with the
reference on every name; the unit tests check that differentially.

How the matcher avoids looping over regexes. A name is lower-cased and dot-terminated,
then cut at each dot into its suffixes (``a.b.c.`` -> ``b.c.``, ``c.``, ``""``). One
dict, keyed by literal name suffix, holds for each suffix:

* ``exact``: matchNames and star-free patterns equal to the whole name;
* ``single``: ``*.suffix`` patterns, hit when the first label is the only thing left;
* ``multi``: ``**.suffix`` patterns, hit when everything left is one or more labels;
* ``irregular``: other patterns whose last labels are literal (``app*.x.y`` under
  ``x.y.``), tested with one combined regex per bucket.

Irregular patterns without a literal tail (the musl-style ``*.example.com.*.*``) are
bucketed under their longest literal label instead, and only patterns with no literal
label at all are tried on every name. A lookup is therefore a handful of dict probes,
proportional to the number of labels, not to the number of selectors.

Compiled regexes here are a linear-time equivalent of Cilium's: inside a label each
``*`` segment but the last is matched atomically at its leftmost position (always
sufficient for ``*`` globs), so a pattern such as ``*a*a*a*b`` cannot make Python's
backtracking engine explode on a hostile query name, which Go's RE2 never would.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from acns_operator.errors import PolicyError
from acns_operator.fqdn.names import to_fqdn
from acns_operator.fqdn.patterns import (
    compile_pattern,
    is_match_all,
    match_name_error,
    match_pattern_error,
    sanitize_pattern,
    trim_space,
)

__all__ = ["FQDNSelector", "Matcher", "compile_selectors", "selector_matches"]

_G = "[-a-zA-Z0-9_]"
# Every character a matching name can hold. Selector characters are label characters,
# dots and stars, and a star stands for label characters only, so a name with anything
# else (space, backslash, unicode) matches no selector at all.
_NAME_SHAPE = re.compile(r"[-a-zA-Z0-9_.]*")
_STAR_RUN = re.compile(r"[*]+")
_MULTILEVEL_PREFIX = re.compile(r"[*]{2,}[.]")
_NEVER = re.compile(r"(?!)")  # a bucket's combined regex until it is sealed


@dataclass(frozen=True, slots=True)
class FQDNSelector:
    """One ``toFQDNs`` / ``rules.dns`` item: exactly one of matchName or matchPattern.

    Values are kept as written (identity labels use them verbatim); matching
    normalises them. Construction validates them like Cilium's API server and agent
    do and raises :class:`~acns_operator.errors.PolicyError` with the reason.
    """

    match_name: str | None = None
    match_pattern: str | None = None

    def __post_init__(self) -> None:
        if (self.match_name is None) == (self.match_pattern is None):
            raise PolicyError("exactly one of matchName or matchPattern must be set")
        if self.match_name is not None:
            error = match_name_error(self.match_name)
        else:
            error = match_pattern_error(self.match_pattern or "")
        if error is not None:
            raise PolicyError(error)

    @classmethod
    def name(cls, value: str) -> FQDNSelector:
        """Build a matchName selector."""
        return cls(match_name=value)

    @classmethod
    def pattern(cls, value: str) -> FQDNSelector:
        """Build a matchPattern selector."""
        return cls(match_pattern=value)

    def __str__(self) -> str:
        if self.match_name is not None:
            return f"matchName: {self.match_name}"
        return f"matchPattern: {self.match_pattern}"


def selector_matches(selector: FQDNSelector, name: str, *, pre_1_19: bool = False) -> bool:
    """Tell whether ``selector`` selects ``name`` (any case, trailing dot optional).

    The reference implementation: a matchName compares literally after normalising
    both sides; a matchPattern uses Cilium's anchored regex. With ``pre_1_19`` the
    pattern language of Cilium before 1.19 applies (no ``**.``, only ``*`` is
    match-all). Use :func:`compile_selectors` to check many selectors at once.
    """
    fqdn = to_fqdn(name)
    if selector.match_name is not None:
        return to_fqdn(selector.match_name) == fqdn
    pattern = compile_pattern(selector.match_pattern or "", pre_1_19=pre_1_19)
    return pattern.fullmatch(fqdn) is not None


def _label_regex(label: str) -> str:
    # A label glob s0*s1*...*sk: s0 anchored, each middle segment at its leftmost
    # position, committed (atomic), the last one by a greedy run that only has to
    # backtrack within this label. Equivalent to s0 G* s1 G* ... G* sk, in linear time.
    segments = _STAR_RUN.split(label)
    if len(segments) == 1:
        return label
    middle = "".join(f"(?>{_G}*?{segment})" for segment in segments[1:-1])
    return f"{segments[0]}{middle}{_G}*{segments[-1]}"


def _safe_regex(text: str, *, pre_1_19: bool) -> str:
    # `text` is a sanitised, star-bearing pattern made of label characters, dots and
    # stars (selectors are validated), so its literal parts need no escaping.
    prefix = ""
    if not pre_1_19:
        multilevel = _MULTILEVEL_PREFIX.match(text)
        if multilevel is not None:
            prefix = f"(?:{_G}+[.])+"
            text = text[multilevel.end() :]
    return prefix + "[.]".join(_label_regex(label) for label in text.split("."))


@dataclass(slots=True)
class _Bucket:
    """Irregular patterns filed under one key, with a combined regex for a fast no."""

    indices: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    regexes: list[re.Pattern[str]] = field(default_factory=list)
    combined: re.Pattern[str] = _NEVER

    def add(self, index: int, regex: str) -> None:
        self.indices.append(index)
        self.sources.append(regex)
        self.regexes.append(re.compile(regex))

    def seal(self) -> None:
        self.combined = re.compile("|".join(f"(?:{source})" for source in self.sources))

    def any_match(self, name: str) -> bool:
        return self.combined.fullmatch(name) is not None

    def collect(self, name: str, out: list[int], *, first_only: bool = False) -> None:
        """Append the index of every pattern matching ``name`` (any one if first_only)."""
        if not self.any_match(name):
            return
        if first_only:
            out.append(self.indices[0])
        else:
            out.extend(
                index
                for index, regex in zip(self.indices, self.regexes, strict=True)
                if regex.fullmatch(name) is not None
            )


@dataclass(slots=True)
class _Suffix:
    """Everything filed under one literal name suffix."""

    exact: list[int] = field(default_factory=list)
    single: list[int] = field(default_factory=list)
    multi: list[int] = field(default_factory=list)
    irregular: _Bucket | None = None


class Matcher:
    """All of one endpoint's selectors, compiled for fast lookups.

    Build it with :func:`compile_selectors`; it is immutable afterwards and safe to
    share between threads. Names may be given in any case, with or without the
    trailing dot.
    """

    __slots__ = ("_by_label", "_by_suffix", "_count", "_match_all", "_unindexed")

    def __init__(self, selectors: Sequence[FQDNSelector], *, pre_1_19: bool = False) -> None:
        """Compile ``selectors``; prefer :func:`compile_selectors`."""
        self._count = len(selectors)
        self._by_suffix: dict[str, _Suffix] = {}
        self._by_label: dict[str, _Bucket] = {}
        self._match_all: list[int] = []
        unindexed = _Bucket()
        by_label: list[tuple[int, str, list[str]]] = []
        for index, selector in enumerate(selectors):
            self._file(index, selector, by_label, pre_1_19=pre_1_19)
        # File each tail-less pattern under its rarest literal label (longest on a tie):
        # in the musl list "*.corp.example.com.*.*" goes under "corp", not under the
        # "example" or "com" that every such pattern shares.
        frequency = Counter(label for _, _, labels in by_label for label in set(labels))
        for index, regex, labels in by_label:
            if labels:
                key = min(labels, key=lambda label: (frequency[label], -len(label)))
                self._by_label.setdefault(key, _Bucket()).add(index, regex)
            else:
                unindexed.add(index, regex)
        for entry in self._by_suffix.values():
            if entry.irregular is not None:
                entry.irregular.seal()
        for bucket in self._by_label.values():
            bucket.seal()
        self._unindexed: _Bucket | None = None
        if unindexed.indices:
            unindexed.seal()
            self._unindexed = unindexed

    def __len__(self) -> int:
        """The number of selectors compiled in."""
        return self._count

    def _entry(self, suffix: str) -> _Suffix:
        entry = self._by_suffix.get(suffix)
        if entry is None:
            entry = self._by_suffix[suffix] = _Suffix()
        return entry

    def _file(
        self,
        index: int,
        selector: FQDNSelector,
        by_label: list[tuple[int, str, list[str]]],
        *,
        pre_1_19: bool,
    ) -> None:
        if selector.match_name is not None:
            self._entry(to_fqdn(selector.match_name)).exact.append(index)
            return
        raw = selector.match_pattern or ""
        if is_match_all(raw, pre_1_19=pre_1_19):
            self._match_all.append(index)
            return
        text = trim_space(raw if pre_1_19 else sanitize_pattern(raw))
        text = to_fqdn(text)
        if "*" not in text:
            self._entry(text).exact.append(index)
            return
        first, _, rest = text.partition(".")
        if "*" not in rest:
            if pre_1_19 or _MULTILEVEL_PREFIX.match(text) is None:
                if _STAR_RUN.fullmatch(first):
                    self._entry(rest).single.append(index)
                    return
            else:
                self._entry(rest).multi.append(index)
                return
        self._file_irregular(index, text, by_label, pre_1_19=pre_1_19)

    def _file_irregular(
        self,
        index: int,
        text: str,
        by_label: list[tuple[int, str, list[str]]],
        *,
        pre_1_19: bool,
    ) -> None:
        regex = _safe_regex(text, pre_1_19=pre_1_19)
        labels = text[:-1].split(".")
        tail: list[str] = []
        for label in reversed(labels):
            if "*" in label:
                break
            tail.append(label)
        if tail:
            suffix = "".join(label + "." for label in reversed(tail))
            entry = self._entry(suffix)
            if entry.irregular is None:
                entry.irregular = _Bucket()
            entry.irregular.add(index, regex)
            return
        # No literal tail: decided once every pattern's labels are known.
        by_label.append((index, regex, [label for label in labels if "*" not in label]))

    def matches(self, name: str) -> bool:
        """Tell whether any selector selects ``name``."""
        return bool(self._scan(to_fqdn(name), first_only=True))

    def matching(self, name: str) -> tuple[int, ...]:
        """Return the indices of the selectors that select ``name``, ascending."""
        found = self._scan(to_fqdn(name), first_only=False)
        return tuple(sorted(found))

    def _scan(self, name: str, *, first_only: bool) -> list[int]:
        # `name` is normalised: lower-cased and ending in '.'. Hot path: every probe
        # here costs tens of nanoseconds, so work is done only when a probe hits.
        found: list[int] = []
        shape_ok: bool | None = None  # computed on first need; most misses never need it
        if self._match_all:
            shape_ok = _NAME_SHAPE.fullmatch(name) is not None
            # Match-all needs "." or non-empty labels throughout.
            if shape_ok and (name == "." or (not name.startswith(".") and ".." not in name)):
                found.extend(self._match_all)
                if first_only:
                    return found
        by_suffix = self._by_suffix
        by_label = self._by_label
        entry = by_suffix.get(name)
        if entry is not None and entry.exact:
            # A literal key equal to the name: no shape check needed.
            found.extend(entry.exact)
            if first_only:
                return found
        # Peel one label at a time: `rest` is then the suffix after that label's dot.
        # `labels_ok` stays true while every label peeled so far is non-empty (what
        # '**.' needs); `first` marks the one label '*.' may stand for.
        labels_ok = True
        first = True
        visited: set[int] | None = None
        rest = name
        while rest:
            label, _, rest = rest.partition(".")
            if not label:
                labels_ok = False
            elif by_label:
                bucket = by_label.get(label)
                if bucket is not None:
                    if first_only:
                        if bucket.any_match(name):
                            found.append(bucket.indices[0])
                            return found
                    else:
                        # The same label twice must not report a bucket twice.
                        visited = visited if visited is not None else set()
                        if id(bucket) not in visited:
                            visited.add(id(bucket))
                            bucket.collect(name, found)
            entry = by_suffix.get(rest)
            if entry is not None:
                if (first and entry.single) or (labels_ok and entry.multi):
                    if shape_ok is None:
                        shape_ok = _NAME_SHAPE.fullmatch(name) is not None
                    if shape_ok:
                        if first:
                            found.extend(entry.single)
                        if labels_ok:
                            found.extend(entry.multi)
                if entry.irregular is not None:
                    entry.irregular.collect(name, found, first_only=first_only)
                if first_only and found:
                    return found
            first = False
        if self._unindexed is not None:
            self._unindexed.collect(name, found, first_only=first_only)
        return found


def compile_selectors(selectors: Sequence[FQDNSelector], *, pre_1_19: bool = False) -> Matcher:
    """Compile one endpoint's selectors into a single :class:`Matcher`.

    The matcher's ``matching()`` equals, for every name, the indices ``i`` for which
    ``selector_matches(selectors[i], name, pre_1_19=pre_1_19)`` holds.
    """
    return Matcher(selectors, pre_1_19=pre_1_19)
