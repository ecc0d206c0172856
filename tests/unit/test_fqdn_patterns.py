"""The matchPattern language: validation tables, sanitising and Cilium's exact regex."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acns_operator.fqdn.patterns import (
    MATCH_ALL_REGEX,
    MAX_NAME_LENGTH,
    REGEX_CACHE_SIZE,
    compile_pattern,
    has_multilevel_prefix,
    is_match_all,
    match_name_error,
    match_pattern_error,
    pattern_to_regex,
    sanitize_pattern,
)
from tests.unit.fqdn_strategies import valid_names, valid_patterns

G = "[-a-zA-Z0-9_]"
MULTI = f"({G}+([.]{G}+){{0,}})[.]"

VALID_NAMES = [
    "cilium.io",
    "cilium.io.",
    "Cilium.IO",
    "a",
    "_sip._tcp.example.com",
    "my-service-1.example.com",
    "x" * MAX_NAME_LENGTH,
]

INVALID_NAMES = [
    ("", "must not be empty"),
    (".", "not just '.'"),
    (".cilium.io", "must not start with '.'"),
    ("cilium..io", "'..'"),
    ("*.cilium.io", "'*' at position 1"),
    ("cilium.io ", "a space at position 10"),
    ("ci lium.io", "a space at position 3"),
    ("cilium.io/path", "'/' at position 10"),
    ("caf\u00e9.io", "'\u00e9' at position 4"),
    ("a\tb", "U+0009 at position 2"),
    ("a[b]", "'[' at position 2"),
    ("a{1}", "'{' at position 2"),
    ("a+b", "'+' at position 2"),
    ("a,b", "',' at position 2"),
    ("a?b", "'?' at position 2"),
    ("x" * (MAX_NAME_LENGTH + 1), "at most 255"),
]

VALID_PATTERNS = [
    "*",
    "**",
    "***.",
    "*.cilium.io",
    "*.cilium.io.",
    "**.cilium.io",
    "test.**.cilium.io.",
    "*cilium.io",
    "app*.example.com",
    "part*ial",
    "*.example.com.*.*.*.*.*",
    "_*._tcp.example.com",
    "cilium.io",
    "*" * MAX_NAME_LENGTH,
]

INVALID_PATTERNS = [
    ("", "must not be empty"),
    (".", "not just '.'"),
    (".*.cilium.io", "must not start with '.'"),
    ("*..cilium.io", "'..'"),
    (" *.cilium.io", "a space at position 1"),
    ("*.cilium.io\n", "U+000A at position 12"),
    ("[a-z]*.io", "'[' at position 1"),
    ("a?.io", "'?' at position 2"),
    ("(a|b).io", "'(' at position 1"),
    ("*.c\u00eflium.io", "'\u00ef' at position 4"),
    ("*" * (MAX_NAME_LENGTH + 1), "at most 255"),
]


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_match_names_are_accepted(name: str) -> None:
    assert match_name_error(name) is None


@pytest.mark.parametrize(("name", "reason"), INVALID_NAMES)
def test_invalid_match_names_are_rejected_with_the_reason(name: str, reason: str) -> None:
    error = match_name_error(name)
    assert error is not None
    assert reason in error


def test_a_wildcard_in_a_match_name_points_at_match_pattern() -> None:
    assert "use matchPattern" in (match_name_error("*.cilium.io") or "")


@pytest.mark.parametrize("pattern", VALID_PATTERNS)
def test_valid_match_patterns_are_accepted(pattern: str) -> None:
    assert match_pattern_error(pattern) is None


@pytest.mark.parametrize(("pattern", "reason"), INVALID_PATTERNS)
def test_invalid_match_patterns_are_rejected_with_the_reason(pattern: str, reason: str) -> None:
    error = match_pattern_error(pattern)
    assert error is not None
    assert reason in error


def test_a_long_invalid_value_is_shortened_in_the_message() -> None:
    error = match_pattern_error("a" * 300 + " ")
    assert error is not None
    assert len(error) < 200


# The CRD schema regexes, with a possessive inner run so Python cannot backtrack
# exponentially; [.] is outside the run's class, so the language is unchanged.
CRD_NAME = re.compile(r"(?:[-a-zA-Z0-9_]++[.]?)+")
CRD_PATTERN = re.compile(r"(?:[-a-zA-Z0-9_*]++[.]?)+")
GO_NAME = re.compile(r"[-a-zA-Z0-9_.]+")
GO_PATTERN = re.compile(r"[-a-zA-Z0-9_.*]+")

value_texts = st.text(alphabet="ab*._- \u00e9\n", max_size=40)


@settings(max_examples=300, deadline=None)
@given(value_texts)
def test_match_pattern_error_accepts_exactly_what_both_upstream_validators_accept(
    text: str,
) -> None:
    upstream_ok = (
        CRD_PATTERN.fullmatch(text) is not None
        and GO_PATTERN.fullmatch(text) is not None
        and len(text) <= MAX_NAME_LENGTH
    )
    assert (match_pattern_error(text) is None) is upstream_ok


@settings(max_examples=300, deadline=None)
@given(value_texts)
def test_match_name_error_accepts_exactly_what_both_upstream_validators_accept(
    text: str,
) -> None:
    upstream_ok = (
        CRD_NAME.fullmatch(text) is not None
        and GO_NAME.fullmatch(text) is not None
        and len(text) <= MAX_NAME_LENGTH
    )
    assert (match_name_error(text) is None) is upstream_ok


@pytest.mark.parametrize("pattern", ["*", "**", "***", "*.", "**.", "***.", " * ", "*\n"])
def test_all_star_patterns_are_match_all(pattern: str) -> None:
    assert is_match_all(pattern)


@pytest.mark.parametrize("pattern", ["*.*", "*.x", "**.x", "x*", "*..", ".*", ""])
def test_patterns_with_anything_but_stars_are_not_match_all(pattern: str) -> None:
    assert not is_match_all(pattern)


def test_before_1_19_only_a_bare_star_is_match_all() -> None:
    assert is_match_all("*", pre_1_19=True)
    assert not is_match_all("**", pre_1_19=True)
    assert not is_match_all("***.", pre_1_19=True)


@pytest.mark.parametrize(
    ("pattern", "multilevel"),
    [
        ("**.cilium.io", True),
        ("***.cilium.io", True),
        ("*.cilium.io", False),
        ("test.**.cilium.io", False),
        ("**cilium.io", False),
        ("**.", False),
        ("**", False),
    ],
)
def test_has_multilevel_prefix_finds_only_a_leading_double_star_dot(
    pattern: str, multilevel: bool
) -> None:
    assert has_multilevel_prefix(pattern) is multilevel


@pytest.mark.parametrize(
    ("pattern", "sanitized"),
    [
        ("*", "*"),
        ("**", "**"),
        ("***.", "***."),
        ("*.Cilium.IO", "*.cilium.io."),
        ("*.cilium.io.", "*.cilium.io."),
        ("**.cilium.io", "**.cilium.io."),
        ("Cilium.io", "cilium.io."),
    ],
)
def test_sanitize_keeps_all_star_patterns_and_qualifies_the_rest(
    pattern: str, sanitized: str
) -> None:
    assert sanitize_pattern(pattern) == sanitized


@pytest.mark.parametrize(
    ("pattern", "regex"),
    [
        ("*", MATCH_ALL_REGEX),
        ("**", MATCH_ALL_REGEX),
        ("***.", MATCH_ALL_REGEX),
        ("cilium.io", "^cilium[.]io[.]$"),
        ("*.cilium.io", f"^{G}*[.]cilium[.]io[.]$"),
        ("*cilium.io", f"^{G}*cilium[.]io[.]$"),
        ("**.cilium.io", f"^{MULTI}cilium[.]io[.]$"),
        ("***.x", f"^{MULTI}x[.]$"),
        ("test.**.cilium.io.", f"^test[.]{G}*[.]cilium[.]io[.]$"),
        ("*.ci**.io.", f"^{G}*[.]ci{G}*[.]io[.]$"),
        ("Part*IAL", f"^part{G}*ial[.]$"),
    ],
)
def test_pattern_to_regex_builds_ciliums_anchored_regex(pattern: str, regex: str) -> None:
    assert pattern_to_regex(pattern) == regex


def test_the_match_all_regex_is_ciliums_any_valid_fqdn_expression() -> None:
    assert MATCH_ALL_REGEX == "(^([-a-zA-Z0-9_]+[.])+$)|(^[.]$)"


def test_the_match_all_regex_needs_the_trailing_dot() -> None:
    # As a toFQDNs selector, '*' selects cache names, which are always qualified.
    assert re.fullmatch(MATCH_ALL_REGEX, "cilium.io.") is not None
    assert re.fullmatch(MATCH_ALL_REGEX, ".") is not None
    assert re.fullmatch(MATCH_ALL_REGEX, "cilium.io") is None


def test_double_star_elsewhere_gives_the_same_regex_as_a_single_star() -> None:
    assert pattern_to_regex("test.**.cilium.io.") == pattern_to_regex("test.*.cilium.io.")
    assert pattern_to_regex("*.ci**.io.") == pattern_to_regex("*.ci*.io.")
    assert pattern_to_regex("***.x") == pattern_to_regex("**.x")


def test_before_1_19_a_leading_double_star_is_a_single_label_star() -> None:
    assert pattern_to_regex("**.cilium.io", pre_1_19=True) == pattern_to_regex("*.cilium.io")
    assert pattern_to_regex("**", pre_1_19=True) == f"^{G}*[.]$"


def test_compiled_patterns_are_cached_in_an_lru_of_ciliums_size() -> None:
    assert REGEX_CACHE_SIZE == 1024
    assert compile_pattern.cache_info().maxsize == REGEX_CACHE_SIZE
    assert compile_pattern("*.cache-test.io") is compile_pattern("*.cache-test.io")


@settings(max_examples=200, deadline=None)
@given(st.one_of(valid_patterns(), valid_names()))
def test_every_valid_pattern_compiles(pattern: str) -> None:
    assert match_pattern_error(pattern) is None
    assert re.compile(pattern_to_regex(pattern)).pattern.startswith(("^", "(^"))


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_pattern_functions_never_raise_on_arbitrary_text(text: str) -> None:
    re.compile(pattern_to_regex(text))
    re.compile(pattern_to_regex(text, pre_1_19=True))
    assert isinstance(match_name_error(text), str | None)
    assert isinstance(match_pattern_error(text), str | None)
    assert isinstance(sanitize_pattern(text), str)
    assert isinstance(is_match_all(text), bool)
    assert isinstance(has_multilevel_prefix(text), bool)
