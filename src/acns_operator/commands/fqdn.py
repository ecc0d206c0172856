"""``acns fqdn``: look at names and selectors the way the agent and proxy match them.

``acns fqdn match`` shows which query names one matchName or matchPattern covers, so a
team can check a selector before putting it in a policy. The group is where the agent's
``acns fqdn cache list`` joins later.
"""

from __future__ import annotations

import json

import click

from acns_operator.commands.fqdn_cache import cache
from acns_operator.errors import PolicyError
from acns_operator.fqdn.matcher import FQDNSelector, compile_selectors
from acns_operator.fqdn.names import to_fqdn
from acns_operator.fqdn.patterns import has_multilevel_prefix, is_match_all

__all__ = ["fqdn", "match"]


@click.group()
def fqdn() -> None:
    """Check FQDN names and selectors exactly as Cilium 1.19 matches them."""


fqdn.add_command(cache)


def _selector(match_name: str | None, match_pattern: str | None) -> FQDNSelector:
    if (match_name is None) == (match_pattern is None):
        raise click.UsageError("give exactly one of --name or --pattern")
    try:
        return FQDNSelector(match_name=match_name, match_pattern=match_pattern)
    except PolicyError as exc:
        raise click.BadParameter(
            str(exc), param_hint="--name" if match_name is not None else "--pattern"
        ) from exc


def _notes(selector: FQDNSelector, *, pre_1_19: bool) -> list[str]:
    # Notes go to stderr so stdout stays one parseable line (or document) per query.
    pattern = selector.match_pattern
    if pattern is None:
        return []
    if is_match_all(pattern, pre_1_19=pre_1_19):
        return [f"{pattern!r} matches every name; AKS blocks match-all patterns in policies"]
    if has_multilevel_prefix(pattern) and not pre_1_19:
        return [
            f"{pattern!r}: a leading '**.' matches one or more labels from Cilium 1.19 on; "
            "older versions match exactly one (try --pre-1.19)"
        ]
    return []


@fqdn.command()
@click.option("--name", "match_name", metavar="NAME", help="A matchName (a literal name).")
@click.option(
    "--pattern", "match_pattern", metavar="PATTERN", help="A matchPattern (with '*' wildcards)."
)
@click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: 'QUERY<TAB>match|no-match' per line; json: a list of objects.",
)
@click.option(
    "--pre-1.19",
    "pre_1_19",
    is_flag=True,
    help="Use Cilium's rules before 1.19: no '**.' prefix, only a bare '*' is match-all.",
)
@click.argument("queries", nargs=-1, required=True, metavar="QUERY...")
def match(
    match_name: str | None,
    match_pattern: str | None,
    output: str,
    pre_1_19: bool,
    queries: tuple[str, ...],
) -> None:
    """Tell, for each QUERY name, whether the selector matches it.

    Query names may be in any case, with or without the trailing dot.
    """
    selector = _selector(match_name, match_pattern)
    for note in _notes(selector, pre_1_19=pre_1_19):
        click.echo(f"note: {note}", err=True)
    matcher = compile_selectors([selector], pre_1_19=pre_1_19)
    verdicts = [(query, matcher.matches(query)) for query in queries]
    if output == "json":
        document = [
            {"query": query, "fqdn": to_fqdn(query), "match": matched}
            for query, matched in verdicts
        ]
        click.echo(json.dumps(document, indent=2))
        return
    for query, matched in verdicts:
        click.echo(f"{query}\t{'match' if matched else 'no-match'}")
