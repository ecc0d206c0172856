"""Kubernetes objects out of YAML or JSON text: multi-document streams and ``List`` kinds.

Pure text-to-data: reading files and stdin is :mod:`acns_operator.api.sources`. The
YAML dialect is the one ``kubectl`` reads: timestamps stay strings (Kubernetes
converts YAML to JSON, which has no timestamp type) and a key repeated in one mapping
is an error instead of silently overriding the first value.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from acns_operator.errors import InputError

__all__ = ["Document", "DocumentError", "Syntax", "parse_documents"]

Syntax = Literal["yaml", "json"]

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


class DocumentError(InputError):
    """The input is not valid YAML or JSON."""

    def __init__(
        self, source: str, problem: str, line: int | None = None, column: int | None = None
    ):
        self.source = source
        self.problem = problem
        self.line = line
        self.column = column
        where = source
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Document:
    """One object from an input: where it came from and its parsed body.

    ``index`` counts documents in the stream (0-based, empty ones included, as
    ``kubectl`` does); ``item`` is the position inside a ``List``'s ``items`` when the
    object came from one; ``line`` is the 1-based line where it starts, when known.
    """

    source: str
    index: int
    body: Any
    item: int | None = None
    line: int | None = None

    @property
    def location(self) -> str:
        """``file:line`` (or ``file``) for messages."""
        return f"{self.source}:{self.line}" if self.line is not None else self.source


class _KubernetesLoader(yaml.SafeLoader):
    """SafeLoader without timestamps, refusing duplicate keys."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        if isinstance(node, MappingNode):
            seen: dict[Any, Node] = {}
            for key_node, _ in node.value:
                if (
                    not isinstance(key_node, ScalarNode)
                    or key_node.tag == "tag:yaml.org,2002:merge"
                ):
                    continue
                key = self.construct_object(key_node, deep=False)
                if not isinstance(key, Hashable):
                    continue
                if key in seen:
                    raise ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key!r} "
                        f"(first at line {seen[key].start_mark.line + 1})",
                        key_node.start_mark,
                    )
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


_KubernetesLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_documents(text: str, source: str, syntax: Syntax = "yaml") -> list[Document]:
    """Parse every object in ``text``; ``List`` objects are expanded into their items.

    Empty documents are skipped. Raises :class:`DocumentError` (an
    :class:`~acns_operator.errors.InputError`) naming ``source`` and the line of the
    problem when the text is not valid YAML / JSON.
    """
    if syntax == "json":
        return _expand(_parse_json(text, source))
    return _expand(_parse_yaml(text, source))


def _parse_json(text: str, source: str) -> list[tuple[Document, Node | None]]:
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DocumentError(source, exc.msg, exc.lineno, exc.colno) from None
    except (RecursionError, ValueError) as exc:
        raise DocumentError(source, f"cannot parse JSON: {exc}") from None
    return [(Document(source=source, index=0, body=body, line=1), None)]


def _parse_yaml(text: str, source: str) -> list[tuple[Document, Node | None]]:
    documents: list[tuple[Document, Node | None]] = []
    try:
        # The reader checks for unprintable characters as soon as it is built.
        loader = _KubernetesLoader(text)
    except yaml.YAMLError as exc:
        raise DocumentError(source, f"invalid YAML: {exc}") from None
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            body = loader.construct_document(node)
            if body is not None:
                line = node.start_mark.line + 1 if node is not None else None
                documents.append((Document(source=source, index=index, body=body, line=line), node))
            index += 1
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            problem = f"{exc.problem} ({exc.context})"
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        raise DocumentError(source, problem, line, column) from None
    except yaml.YAMLError as exc:
        raise DocumentError(source, f"invalid YAML: {exc}") from None
    except RecursionError:
        raise DocumentError(source, "the YAML is nested too deeply to read") from None
    finally:
        loader.dispose()
    return documents


def _is_list(body: Any) -> bool:
    if not isinstance(body, Mapping):
        return False
    kind = body.get("kind")
    return isinstance(kind, str) and kind.endswith("List") and isinstance(body.get("items"), list)


def _item_lines(node: Node | None) -> list[int | None]:
    # Where each item of a List starts, read from the YAML node tree.
    if not isinstance(node, MappingNode):
        return []
    for key_node, value_node in node.value:
        if (
            isinstance(key_node, ScalarNode)
            and key_node.value == "items"
            and isinstance(value_node, SequenceNode)
        ):
            return [item.start_mark.line + 1 for item in value_node.value]
    return []


def _expand(parsed: list[tuple[Document, Node | None]]) -> list[Document]:
    expanded: list[Document] = []
    for document, node in parsed:
        if not _is_list(document.body):
            expanded.append(document)
            continue
        lines = _item_lines(node)
        for position, item in enumerate(document.body["items"]):
            line = lines[position] if position < len(lines) else document.line
            expanded.append(
                Document(
                    source=document.source,
                    index=document.index,
                    body=item,
                    item=position,
                    line=line,
                )
            )
    return expanded
