"""Where documents come from: files, folders (recursively) and stdin.

The thin I/O around :mod:`acns_operator.api.documents`, shared by ``acns lint``,
``acns explain`` and anything else that takes policy files on the command line.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from acns_operator.api.documents import Document, Syntax, parse_documents
from acns_operator.errors import InputError

__all__ = ["POLICY_SUFFIXES", "STDIN", "expand_paths", "load_source"]

STDIN = "-"
"""The path that means standard input."""

POLICY_SUFFIXES = (".yaml", ".yml", ".json")
"""File suffixes picked up when a folder is given."""

_STDIN_NAME = "<stdin>"


def expand_paths(paths: Sequence[str]) -> Iterator[str]:
    """Yield the inputs named by ``paths``: files as given, folders walked recursively.

    Inside folders only ``*.yaml``, ``*.yml`` and ``*.json`` files count, in sorted
    order, skipping hidden files and folders (``.git``). A path that does not exist is
    yielded as is, so reading it reports the error in order with the other results.
    """
    for raw in paths:
        if raw == STDIN:
            yield raw
            continue
        path = Path(raw)
        if not path.is_dir():
            yield raw
            continue
        for found in sorted(path.rglob("*")):
            relative = found.relative_to(path)
            if any(part.startswith(".") for part in relative.parts):
                continue
            if found.is_file() and found.suffix.lower() in POLICY_SUFFIXES:
                yield str(found)


def _syntax_for(path: str) -> Syntax:
    return "json" if path.lower().endswith(".json") else "yaml"


def load_source(path: str, stdin: TextIO | None = None) -> list[Document]:
    """Read and parse one input (a file path or ``-``) into documents.

    Raises :class:`~acns_operator.errors.InputError` naming the file when it cannot
    be read or decoded, and its subclass
    :class:`~acns_operator.api.documents.DocumentError` with the line when it is not
    valid YAML or JSON. Stdin is read as YAML, which also accepts JSON.
    """
    if path == STDIN:
        stream = stdin if stdin is not None else sys.stdin
        try:
            text = stream.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{_STDIN_NAME}: cannot read: {exc}") from None
        return parse_documents(text, _STDIN_NAME, "yaml")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file or folder") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder") from None
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not UTF-8 text (byte {exc.start}): is it a binary file?"
        ) from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_documents(text, path, _syntax_for(path))
