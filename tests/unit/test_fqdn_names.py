"""Name normalisation: Cilium's FQDN() (lower-case, dot-terminated)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acns_operator.fqdn.names import is_fqdn, to_fqdn, to_lower


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cilium.io", "cilium.io."),
        ("cilium.io.", "cilium.io."),
        ("Cilium.IO", "cilium.io."),
        ("WWW.Cilium.Io.", "www.cilium.io."),
        ("", "."),
        (".", "."),
        ("_sip._tcp.Example.com", "_sip._tcp.example.com."),
        # A backslash-escaped final dot belongs to the label, so a root dot is added.
        ("a\\.", "a\\.."),
        # Two backslashes escape each other; the dot is the root separator again.
        ("a\\\\.", "a\\\\."),
        ("a\\\\\\.", "a\\\\\\.."),
    ],
)
def test_to_fqdn_lower_cases_and_adds_the_root_dot_only_when_missing(
    name: str, expected: str
) -> None:
    assert to_fqdn(name) == expected


def test_capital_i_with_dot_lower_cases_to_a_plain_i_as_in_go() -> None:
    assert to_lower("\u0130STANBUL.example") == "istanbul.example"


@pytest.mark.parametrize(
    ("name", "qualified"),
    [("a.", True), ("a", False), ("", False), ("a\\.", False), ("a\\\\.", True), (".", True)],
)
def test_is_fqdn_tells_whether_the_final_dot_is_unescaped(name: str, qualified: bool) -> None:
    assert is_fqdn(name) is qualified


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_to_fqdn_always_ends_in_a_dot(text: str) -> None:
    assert to_fqdn(text).endswith(".")


@settings(max_examples=200, deadline=None)
@given(st.text().filter(lambda text: "\\" not in text))
def test_to_fqdn_is_idempotent_on_names_without_escapes(text: str) -> None:
    once = to_fqdn(text)
    assert to_fqdn(once) == once
    assert is_fqdn(once)


def test_a_trailing_backslash_escapes_the_added_dot_as_upstream_does() -> None:
    # Faithful to miekg/dns Fqdn: the added dot follows a backslash, so it reads as an
    # escaped dot and a second pass adds another root dot. Such names never pass
    # validation, so nothing depends on it.
    assert to_fqdn("a\\") == "a\\."
    assert to_fqdn(to_fqdn("a\\")) == "a\\.."
