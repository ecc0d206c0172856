"""Selectors and the compiled matcher: Cilium's examples, and agreement with the regex."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acns_operator.errors import PolicyError
from acns_operator.fqdn.matcher import FQDNSelector, compile_selectors, selector_matches
from acns_operator.fqdn.patterns import match_name_error, match_pattern_error
from tests.unit.fqdn_strategies import (
    names_from_pattern,
    query_texts,
    valid_names,
    valid_patterns,
)

# (matchPattern, query name, matches?) — every example of cilium-semantics.md §1.2-1.4.
PATTERN_TABLE = [
    # '*' is one label's worth of characters, never a dot.
    ("*.cilium.io", "app.cilium.io", True),
    ("*.cilium.io", "cilium.io", False),
    ("*.cilium.io", "a.b.cilium.io", False),
    ("*.cilium.io", ".cilium.io.", True),  # '*' may match nothing: the degenerate name
    ("*.cilium.io.", "APP.Cilium.IO", True),
    # The leading '**.' is one or more whole labels.
    ("**.cilium.io", "app.cilium.io", True),
    ("**.cilium.io", "test.app.cilium.io", True),
    ("**.cilium.io", "a.b.c.d.cilium.io.", True),
    ("**.cilium.io", "cilium.io", False),
    ("**.cilium.io", ".cilium.io.", False),
    ("**.cilium.io", "a..cilium.io.", False),
    ("***.x", "a.b.x", True),
    ("***.x", "x", False),
    # '**' anywhere else is a plain '*'.
    ("test.**.cilium.io.", "test.app.cilium.io", True),
    ("test.**.cilium.io.", "test.a.b.cilium.io", False),
    ("*.ci**.io.", "a.cilium.io", True),
    ("*.ci**.io.", "a.ci.io", True),
    ("*.ci**.io.", "a.b.cilium.io", False),
    ("*.ci**.io.", "a.ci.x.io", False),
    # '*' anywhere in a label.
    ("sub*.x", "sub.x", True),
    ("sub*.x", "subway.x", True),
    ("sub*.x", "a.sub.x", False),
    ("*x", "x", True),
    ("*x", "abcx", True),
    ("*x", "a.x", False),
    ("part*ial", "partial", True),
    ("part*ial", "part-of-ial", True),
    ("part*ial", "part.ial", False),
    # The '*cilium.io' quirk: the code, not the doc comment.
    ("*cilium.io", "cilium.io", True),
    ("*cilium.io", "subcilium.io", True),
    ("*cilium.io", "sub-cilium.io", True),
    ("*cilium.io", "www.cilium.io", False),
    # '_' is a label character (SRV / DNS-SD names).
    ("*._tcp.example.com", "_sip._tcp.example.com", True),
    ("_*._tcp.example.com", "_sip._tcp.example.com", True),
    # All-star patterns: any valid name, and the root.
    ("*", "anything.example.com", True),
    ("*", "a", True),
    ("*", ".", True),
    ("*", "", True),
    ("**", "a.b.c", True),
    ("***.", "a", True),
    ("*", "a..b", False),
    ("*", ".a", False),
    ("*", "a b.c", False),
    ("*", "caf\u00e9.io", False),
    # A pattern without stars is a literal, case-insensitive, trailing dot implied.
    ("cilium.io", "CILIUM.IO.", True),
    ("cilium.io", "www.cilium.io", False),
    # Other regex characters in names are literals that no pattern covers.
    ("*.io", "a+.io", False),
    ("*.io", "a\\.io", False),
    ("*.io", "a.io\n", False),
]

# The Alpine/musl search-domain workaround from the ACNS limitations (seed 001).
MUSL_PATTERNS = [
    "*.example.com",
    "*.example.com.*.*",
    "*.example.com.*.*.*",
    "*.example.com.*.*.*.*",
    "*.example.com.*.*.*.*.*",
]
MUSL_TABLE = [
    ("api.example.com", (0,)),
    ("api.example.com.cluster.local", (1,)),
    ("api.example.com.svc.cluster.local", (2,)),
    ("api.example.com.default.svc.cluster.local", (3,)),
    ("api.example.com.a.default.svc.cluster.local", (4,)),
    ("api.example.com.b.a.default.svc.cluster.local", ()),
    ("example.com.svc.cluster.local", ()),
    ("api.example.org.svc.cluster.local", ()),
]

# Cilium before 1.19: no multi-label prefix, only a bare '*' is match-all.
PRE_1_19_TABLE = [
    ("**.cilium.io", "app.cilium.io", True),
    ("**.cilium.io", "test.app.cilium.io", False),
    ("**", "a.b", False),
    ("*", "a.b", True),
]


@pytest.mark.parametrize(("pattern", "name", "expected"), PATTERN_TABLE)
def test_match_patterns_select_exactly_what_cilium_selects(
    pattern: str, name: str, expected: bool
) -> None:
    selector = FQDNSelector.pattern(pattern)
    assert selector_matches(selector, name) is expected
    assert compile_selectors([selector]).matches(name) is expected


def test_one_matcher_over_the_whole_table_agrees_with_each_row() -> None:
    selectors = [FQDNSelector.pattern(pattern) for pattern, _, _ in PATTERN_TABLE]
    matcher = compile_selectors(selectors)
    for index, (_, name, expected) in enumerate(PATTERN_TABLE):
        assert (index in matcher.matching(name)) is expected, (index, name)


@pytest.mark.parametrize(("name", "expected"), MUSL_TABLE)
def test_the_musl_search_domain_patterns_cover_one_to_five_appended_labels(
    name: str, expected: tuple[int, ...]
) -> None:
    matcher = compile_selectors([FQDNSelector.pattern(pattern) for pattern in MUSL_PATTERNS])
    assert matcher.matching(name) == expected


@pytest.mark.parametrize(("pattern", "name", "expected"), PRE_1_19_TABLE)
def test_before_1_19_double_star_is_one_label_and_not_match_all(
    pattern: str, name: str, expected: bool
) -> None:
    selector = FQDNSelector.pattern(pattern)
    assert selector_matches(selector, name, pre_1_19=True) is expected
    assert compile_selectors([selector], pre_1_19=True).matches(name) is expected


@pytest.mark.parametrize(
    ("match_name", "name", "expected"),
    [
        ("cilium.io", "cilium.io", True),
        ("cilium.io", "Cilium.IO.", True),
        ("Cilium.IO.", "cilium.io", True),
        ("cilium.io", "www.cilium.io", False),
        ("cilium.io", "cilium.io.com", False),
        ("ciliumXio", "cilium.io", False),
    ],
)
def test_a_match_name_is_a_case_insensitive_literal(
    match_name: str, name: str, expected: bool
) -> None:
    selector = FQDNSelector.name(match_name)
    assert selector_matches(selector, name) is expected
    assert compile_selectors([selector]).matches(name) is expected


def test_matching_lists_every_selector_that_matches_in_ascending_order() -> None:
    selectors = [
        FQDNSelector.pattern("**.cilium.io"),
        FQDNSelector.name("www.cilium.io"),
        FQDNSelector.pattern("*.cilium.io"),
        FQDNSelector.pattern("w*.cilium.io"),
        FQDNSelector.pattern("*.example.com"),
        FQDNSelector.pattern("*"),
        FQDNSelector.pattern("*.*.io"),
        FQDNSelector.name("www.cilium.io"),
    ]
    matcher = compile_selectors(selectors)
    assert matcher.matching("WWW.cilium.io") == (0, 1, 2, 3, 5, 6, 7)
    assert matcher.matching("a.b.cilium.io") == (0, 5)
    assert matcher.matching("cilium.io") == (5,)
    assert matcher.matching("a b") == ()
    assert len(matcher) == len(selectors)


def test_an_empty_matcher_matches_nothing() -> None:
    matcher = compile_selectors([])
    assert not matcher.matches("cilium.io")
    assert matcher.matching(".") == ()


def test_a_selector_needs_exactly_one_of_name_and_pattern() -> None:
    with pytest.raises(PolicyError, match="exactly one"):
        FQDNSelector()
    with pytest.raises(PolicyError, match="exactly one"):
        FQDNSelector(match_name="a.io", match_pattern="*.io")


def test_a_selector_with_an_invalid_value_says_what_is_wrong() -> None:
    with pytest.raises(PolicyError, match="'/' at position 2"):
        FQDNSelector.pattern("a/b")
    with pytest.raises(PolicyError, match="use matchPattern"):
        FQDNSelector.name("*.io")


def test_selectors_are_hashable_values_that_print_as_written() -> None:
    assert FQDNSelector.pattern("*.Cilium.io") == FQDNSelector(match_pattern="*.Cilium.io")
    assert len({FQDNSelector.name("a.io"), FQDNSelector.name("a.io")}) == 1
    assert str(FQDNSelector.pattern("*.Cilium.io")) == "matchPattern: *.Cilium.io"
    assert str(FQDNSelector.name("a.io")) == "matchName: a.io"


def test_a_hostile_name_against_a_many_star_pattern_is_answered_quickly() -> None:
    # Python's backtracking regex would take exponential time on this pair; the
    # compiled matcher's atomic groups keep it linear, as Go's RE2 is.
    selector = FQDNSelector.pattern("*a*a*a*a*a*a*a*a*a*a*b.x")
    matcher = compile_selectors([selector, FQDNSelector.pattern("*b")])
    assert not matcher.matches("a" * 200 + ".x")
    assert matcher.matching("a" * 200 + "b.x") == (0,)


# ---------------------------------------------------------------------------
# Properties


@settings(max_examples=200, deadline=None)
@given(valid_names())
def test_a_name_always_matches_its_own_match_name(name: str) -> None:
    selector = FQDNSelector.name(name)
    assert selector_matches(selector, name)
    assert selector_matches(selector, name.upper())
    assert compile_selectors([selector]).matches(name.swapcase())


@settings(max_examples=200, deadline=None)
@given(st.data(), valid_patterns())
def test_filling_the_wildcards_with_label_characters_always_matches(
    data: st.DataObject, pattern: str
) -> None:
    name = data.draw(names_from_pattern(pattern))
    selector = FQDNSelector.pattern(pattern)
    assert selector_matches(selector, name), name
    assert compile_selectors([selector]).matches(name), name


@settings(max_examples=200, deadline=None)
@given(st.data(), valid_patterns(prefix=False, match_all=False).filter(lambda p: "*" in p))
def test_a_star_never_crosses_a_dot(data: st.DataObject, pattern: str) -> None:
    name = data.draw(names_from_pattern(pattern, crossing=True))
    selector = FQDNSelector.pattern(pattern)
    assert not selector_matches(selector, name), name
    assert not compile_selectors([selector]).matches(name), name


@st.composite
def selector_lists(draw: st.DrawFn) -> list[FQDNSelector]:
    """A mix of matchNames and matchPatterns, like one endpoint's rules."""
    selectors = []
    for _ in range(draw(st.integers(min_value=0, max_value=12))):
        if draw(st.integers(min_value=0, max_value=3)) == 0:
            selectors.append(FQDNSelector.name(draw(valid_names())))
        else:
            selectors.append(FQDNSelector.pattern(draw(valid_patterns())))
    return selectors


@st.composite
def endpoint_and_names(draw: st.DrawFn) -> tuple[list[FQDNSelector], list[str]]:
    """Selectors, plus names that hit some of them, miss them or are not names at all."""
    selectors = draw(selector_lists())
    names = draw(st.lists(st.one_of(valid_names(), query_texts), max_size=6))
    for selector in selectors:
        if selector.match_pattern is not None and draw(st.booleans()):
            names.append(draw(names_from_pattern(selector.match_pattern)))
            names.append(draw(names_from_pattern(selector.match_pattern, crossing=True)))
        elif selector.match_name is not None and draw(st.booleans()):
            names.append(selector.match_name)
    return selectors, names


@pytest.mark.parametrize("pre_1_19", [False, True])
@settings(max_examples=150, deadline=None)
@given(endpoint_and_names())
def test_the_compiled_matcher_agrees_with_the_per_selector_regex(
    pre_1_19: bool, case: tuple[list[FQDNSelector], list[str]]
) -> None:
    selectors, names = case
    matcher = compile_selectors(selectors, pre_1_19=pre_1_19)
    for name in names:
        expected = tuple(
            index
            for index, selector in enumerate(selectors)
            if selector_matches(selector, name, pre_1_19=pre_1_19)
        )
        assert matcher.matching(name) == expected, name
        assert matcher.matches(name) is bool(expected), name


@settings(max_examples=200, deadline=None)
@given(st.text(), selector_lists())
def test_matching_never_raises_on_arbitrary_text(text: str, selectors: list[FQDNSelector]) -> None:
    matcher = compile_selectors(selectors)
    assert isinstance(matcher.matches(text), bool)
    assert all(0 <= index < len(selectors) for index in matcher.matching(text))
    for selector in selectors:
        assert isinstance(selector_matches(selector, text), bool)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_building_a_selector_from_arbitrary_text_fails_only_with_the_validation_reason(
    text: str,
) -> None:
    for build, reason in (
        (FQDNSelector.name, match_name_error(text)),
        (FQDNSelector.pattern, match_pattern_error(text)),
    ):
        if reason is None:
            assert build(text) == build(text)
        else:
            with pytest.raises(PolicyError, match=re.escape(reason)):
                build(text)
