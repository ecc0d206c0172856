"""The matchName / matchPattern language: validation, sanitising, regex building.

Pure functions, no state other than a bounded regex cache. The rules are upstream
Cilium 1.19's (``pkg/fqdn/matchpattern``, ``pkg/policy/api/fqdn.go``), restated in
the project's Cilium semantics reference, §1:

* ``*`` matches zero or more of ``[-a-zA-Z0-9_]`` inside one label, never a dot;
* a leading run of two or more ``*`` followed by ``.`` matches one or more whole labels
  (new in 1.19); ``**`` anywhere else is the same as ``*``;
* a pattern made only of ``*`` with an optional final ``.`` matches every valid name;
* everything is lower-cased and compared dot-terminated.

Validation applies both of upstream's validators, the CRD schema and the Go sanitiser,
so a value accepted here is accepted by a real Cilium API server and agent.
"""

from __future__ import annotations

import re
import string
from functools import lru_cache

from acns_operator.fqdn.names import to_fqdn, to_lower

__all__ = [
    "LABEL_CHARS",
    "MATCH_ALL_REGEX",
    "MAX_NAME_LENGTH",
    "MULTILEVEL_PREFIX_REGEX",
    "STAR_REGEX",
    "compile_pattern",
    "has_multilevel_prefix",
    "is_match_all",
    "match_name_error",
    "match_pattern_error",
    "pattern_to_regex",
    "sanitize_pattern",
    "trim_space",
]

MAX_NAME_LENGTH = 255
"""The longest matchName / matchPattern upstream accepts (CRD maxLength, Go check)."""

LABEL_CHARS = frozenset(string.ascii_letters + string.digits + "-_")
"""Characters a label may hold; ``*`` stands for any run of them (``_`` for SRV names)."""

_CLASS = "[-a-zA-Z0-9_]"
STAR_REGEX = f"{_CLASS}*"
"""What a run of ``*`` becomes: zero or more label characters, never a dot."""

MULTILEVEL_PREFIX_REGEX = f"({_CLASS}+([.]{_CLASS}+){{0,}})[.]"
"""What a leading ``**.`` becomes (Cilium >= 1.19): one or more whole labels."""

MATCH_ALL_REGEX = f"(^({_CLASS}+[.])+$)|(^[.]$)"
"""The anchored regex of an all-star pattern: any valid dot-terminated name, or ``.``."""

REGEX_CACHE_SIZE = 1024
"""Compiled regexes kept, like Cilium's ``fqdn-regex-compile-lru-size`` default."""

_NAME_CHARS = LABEL_CHARS | {"."}
_PATTERN_CHARS = _NAME_CHARS | {"*"}
_NAME_CHARS_TEXT = "letters, digits, '-', '_' and '.'"
_PATTERN_CHARS_TEXT = "letters, digits, '-', '_', '.' and '*'"

# Go's strings.TrimSpace trims Unicode White_Space; Python's str.strip() would also trim
# the ASCII separators U+001C..U+001F, so the set is spelled out.
_WHITE_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_ALL_STARS = re.compile(r"[*]+[.]?")
_MULTILEVEL_PREFIX = re.compile(r"[*]{2,}[.]")
_STAR_RUN = re.compile(r"[*]+")


def trim_space(text: str) -> str:
    """Strip leading and trailing white space as Go's ``strings.TrimSpace`` does."""
    return text.strip(_WHITE_SPACE)


def is_match_all(pattern: str, *, pre_1_19: bool = False) -> bool:
    """Tell whether ``pattern`` selects every name (``*``, ``**``, ``***.`` ...).

    The check is on the trimmed, lower-cased pattern. With ``pre_1_19`` only a bare
    ``*`` counts, as in Cilium before 1.19.
    """
    trimmed = trim_space(pattern)
    if pre_1_19:
        return trimmed == "*"
    return _ALL_STARS.fullmatch(trimmed) is not None


def has_multilevel_prefix(pattern: str) -> bool:
    """Tell whether ``pattern`` starts with the ``**.`` multi-label wildcard.

    True for a leading run of two or more ``*`` followed by ``.`` (``**.x``,
    ``***.x``), which Cilium 1.19 reads as "one or more labels" and older versions as a
    single label. All-star patterns such as ``**.`` are match-all instead, so they are
    not counted.
    """
    trimmed = trim_space(pattern)
    return _MULTILEVEL_PREFIX.match(trimmed) is not None and not is_match_all(trimmed)


def _describe_character(char: str) -> str:
    if char == " ":
        return "a space"
    if char.isprintable():
        return f"{char!r}"
    return f"the character U+{ord(char):04X}"


def _quote(value: str) -> str:
    # Keep messages readable when someone pastes a whole file into one field.
    if len(value) <= 64:
        return repr(value)
    return repr(value[:60]) + "..."


def _value_error(value: str, field: str, allowed: frozenset[str], allowed_text: str) -> str | None:
    if value == "":
        return f"{field} must not be empty"
    for position, char in enumerate(value, start=1):
        if char not in allowed:
            return (
                f"{field} {_quote(value)} contains {_describe_character(char)} at position "
                f"{position}; only {allowed_text} are allowed"
            )
    if len(value) > MAX_NAME_LENGTH:
        return f"{field} is {len(value)} characters long; at most {MAX_NAME_LENGTH} are allowed"
    # The next three are the CRD schema's ^([...]+[.]?)+$ (the Go sanitiser lets them
    # through, the API server does not).
    if value == ".":
        return f"{field} must name a domain, not just '.'"
    if value.startswith("."):
        return f"{field} {_quote(value)} must not start with '.'"
    if ".." in value:
        return f"{field} {_quote(value)} must not contain '..' (an empty label)"
    return None


def match_name_error(name: str) -> str | None:
    """Say why ``name`` is not a valid matchName, or return None when it is.

    Applies the CRD schema (``^([-a-zA-Z0-9_]+[.]?)+$``, at most 255 characters) and
    the Go sanitiser (``^[-a-zA-Z0-9_.]+$``). ``*`` is not allowed: a matchName is a
    literal; wildcards belong in matchPattern.
    """
    error = _value_error(name, "matchName", _NAME_CHARS, _NAME_CHARS_TEXT)
    if error is not None and "*" in name and "'*'" in error:
        return error + " (use matchPattern for wildcards)"
    return error


def match_pattern_error(pattern: str) -> str | None:
    """Say why ``pattern`` is not a valid matchPattern, or return None when it is.

    Applies the CRD schema (``^([-a-zA-Z0-9_*]+[.]?)+$``, at most 255 characters) and
    the Go sanitiser (``^[-a-zA-Z0-9_.*]+$`` on the trimmed pattern, at most 255).
    Match-all patterns are valid here; whether a profile allows them is policy.
    """
    return _value_error(pattern, "matchPattern", _PATTERN_CHARS, _PATTERN_CHARS_TEXT)


def sanitize_pattern(pattern: str) -> str:
    """Return the canonical form of ``pattern``, as Cilium's ``Sanitize`` does.

    All-star patterns (``*``, ``**``, ``***.``) are returned unchanged; any other is
    lower-cased and dot-terminated with :func:`~acns_operator.fqdn.names.to_fqdn`.
    """
    if _ALL_STARS.fullmatch(pattern) is not None:
        return pattern
    return to_fqdn(pattern)


def _escape_literal(text: str) -> str:
    # Valid patterns hold only label characters here, which need no escaping (so the
    # result is Cilium's regex verbatim); anything else is escaped so that even an
    # invalid pattern gives a compilable regex that reads it literally.
    if all(char in LABEL_CHARS for char in text):
        return text
    return "".join(char if char in LABEL_CHARS else re.escape(char) for char in text)


def pattern_to_regex(pattern: str, *, pre_1_19: bool = False) -> str:
    """Return the anchored regex Cilium matches ``pattern`` with.

    ``pattern`` is first sanitised (:func:`sanitize_pattern`), then, exactly as
    Cilium's ``ToAnchoredRegexp``: trimmed and lower-cased; an all-star pattern gives
    :data:`MATCH_ALL_REGEX`; otherwise every ``.`` becomes ``[.]``, a leading ``**.``
    becomes :data:`MULTILEVEL_PREFIX_REGEX`, every other run of ``*`` becomes
    :data:`STAR_REGEX`, and the result is anchored with ``^`` and ``$``. A matchName
    goes through the same function: it has no ``*``, so it stays a literal.

    With ``pre_1_19``, Cilium's earlier rules apply: only a bare ``*`` is match-all and
    a leading ``**.`` is an ordinary single-label ``*``.
    """
    if pre_1_19:
        sanitized = pattern if pattern == "*" else to_fqdn(pattern)
    else:
        sanitized = sanitize_pattern(pattern)
    text = to_lower(trim_space(sanitized))
    if is_match_all(text, pre_1_19=pre_1_19):
        return MATCH_ALL_REGEX
    prefix = ""
    if not pre_1_19:
        multilevel = _MULTILEVEL_PREFIX.match(text)
        if multilevel is not None:
            prefix = MULTILEVEL_PREFIX_REGEX
            text = text[multilevel.end() :]
    body = STAR_REGEX.join(
        "[.]".join(_escape_literal(part) for part in piece.split("."))
        for piece in _STAR_RUN.split(text)
    )
    return f"^{prefix}{body}$"


@lru_cache(maxsize=REGEX_CACHE_SIZE)
def compile_pattern(pattern: str, *, pre_1_19: bool = False) -> re.Pattern[str]:
    """Compile :func:`pattern_to_regex` of ``pattern``, cached (LRU, 1024 entries).

    Use the result with ``fullmatch`` on a name already passed through
    :func:`~acns_operator.fqdn.names.to_fqdn`: Python's ``$`` also matches before a
    final newline, where Go's does not, and ``fullmatch`` closes that gap.
    """
    return re.compile(pattern_to_regex(pattern, pre_1_19=pre_1_19))
