"""The settings tables in docs/*.md are generated from the settings classes.

Each table sits between ``<!-- settings:ClassName -->`` and ``<!-- /settings -->``.
When a field is added, renamed or re-documented, this test fails and prints the table
to paste in its place.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from acns_operator.settings import DnsProxySettings, OperatorSettings, PolicySettings

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseSettings):
            return "(PolicySettings)"
    else:
        value = info.default
    if value is PydanticUndefined:
        return "(required)"
    if value is None:
        return "unset"
    if isinstance(value, bool | str):
        return f"`{json.dumps(value)}`" if isinstance(value, bool) else f"`{value}`"
    if isinstance(value, float) and value.is_integer() and value >= 86400:
        return f"`{value:.0f}` ({value / 86400:.0f} days)"
    return f"`{json.dumps(value)}`"


def settings_table(cls: type[BaseSettings]) -> str:
    """The markdown table of ``cls``: field, environment variable, default, meaning."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    rows = ["| setting | environment variable | default | meaning |", "|---|---|---|---|"]
    for name, info in cls.model_fields.items():
        env = f"{prefix}{name}".upper()
        text = (info.description or "").replace("|", "\\|")
        rows.append(f"| `{name}` | `{env}` | {_default(info)} | {text} |")
    return "\n".join(rows)


def _block(text: str, cls: type[BaseSettings]) -> str | None:
    match = re.search(
        rf"<!-- settings:{cls.__name__} -->\n(.*?)\n<!-- /settings -->", text, re.DOTALL
    )
    return match.group(1) if match else None


@pytest.mark.parametrize(
    ("doc", "cls"),
    [
        ("operator.md", OperatorSettings),
        ("policies.md", PolicySettings),
        ("dnsproxy.md", DnsProxySettings),
    ],
)
def test_the_settings_table_matches_the_settings_class(doc: str, cls: type[BaseSettings]) -> None:
    expected = settings_table(cls)
    found = _block((DOCS / doc).read_text(encoding="utf-8"), cls)
    assert found == expected, f"docs/{doc}: replace the {cls.__name__} table with:\n{expected}"
