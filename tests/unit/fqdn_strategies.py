"""Hypothesis strategies for DNS names and matchPattern / matchName values.

The alphabets are small on purpose: random patterns and random names only match each
other often enough to test anything when they share letters and labels.
"""

from __future__ import annotations

import re

from hypothesis import strategies as st

LABEL_ALPHABET = "abAB0-_"
VOCABULARY = ["app", "cilium", "io", "x", "example", "com", "svc", "a", "b"]

labels = st.one_of(
    st.sampled_from(VOCABULARY),
    st.text(alphabet=LABEL_ALPHABET, min_size=1, max_size=4),
)
"""One valid label, mixed case."""


@st.composite
def valid_names(draw: st.DrawFn) -> str:
    """A valid matchName / query name, mixed case, with or without the trailing dot."""
    name = ".".join(draw(st.lists(labels, min_size=1, max_size=5)))
    return name + "." if draw(st.booleans()) else name


glob_labels = st.one_of(
    labels,
    st.sampled_from(["*", "**", "a*", "*a", "a*b", "*-*", "ci**"]),
    st.text(alphabet=LABEL_ALPHABET + "*", min_size=1, max_size=5),
)
"""One label of a pattern: literal, or with '*' anywhere."""


@st.composite
def valid_patterns(draw: st.DrawFn, *, prefix: bool = True, match_all: bool = True) -> str:
    """A valid matchPattern: optional '**.' prefix, labels with stars, optional final dot."""
    if match_all and draw(st.integers(min_value=0, max_value=15)) == 0:
        return draw(st.sampled_from(["*", "**", "*.", "**.", "***."]))
    head = draw(st.sampled_from(["**.", "***."])) if prefix and draw(st.booleans()) else ""
    body = ".".join(draw(st.lists(glob_labels, min_size=1, max_size=4)))
    pattern = head + body
    if draw(st.booleans()):
        pattern += "."
    if re.fullmatch(r"[*]+[.]?", pattern) and not match_all:
        # An all-star body is match-all; make it a one-label pattern instead.
        pattern = "*x"
    if not prefix and re.match(r"[*]{2,}[.]", pattern):
        # A body that starts with '**.' would be a prefix after all.
        pattern = "x" + pattern
    return pattern


@st.composite
def names_from_pattern(draw: st.DrawFn, pattern: str, *, crossing: bool = False) -> str:
    """A name made by filling ``pattern``'s wildcards with label characters.

    A leading '**.' becomes one to three labels. With ``crossing``, one '*' is filled
    with text holding a dot, which a '*' must never match.
    """
    stars = re.compile(r"[*]+")
    all_stars = re.fullmatch(r"[*]+[.]?", pattern) is not None
    # Fill the qualified form: in "app.*" the last '*' may be empty only before the root
    # dot ("app.."), while "app." is another name.
    text = pattern if all_stars or pattern.endswith(".") else pattern + "."
    head = ""
    multilevel = re.match(r"[*]{2,}[.]", text)
    if multilevel is not None and not all_stars:
        head = ".".join(draw(st.lists(labels, min_size=1, max_size=3))) + "."
        text = text[multilevel.end() :]
    runs = len(stars.findall(text))
    dotted = draw(st.integers(min_value=0, max_value=runs - 1)) if crossing and runs else -1
    fills = iter(
        draw(st.text(alphabet=LABEL_ALPHABET, max_size=3))
        + (
            "." + draw(st.text(alphabet=LABEL_ALPHABET, min_size=1, max_size=3))
            if index == dotted
            else ""
        )
        for index in range(runs)
    )
    return head + stars.sub(lambda _: next(fills), text)


query_texts = st.text(alphabet="abAB0-_.* \\\u00e9\u0130\n", max_size=12)
"""Arbitrary query text, including characters no valid name holds."""
