"""Reading Kubernetes objects out of YAML/JSON text, files, folders and stdin."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from acns_operator.api.documents import DocumentError, parse_documents
from acns_operator.api.sources import expand_paths, load_source
from acns_operator.errors import InputError


def test_a_multi_document_stream_gives_one_document_per_object_with_its_line() -> None:
    text = "a: 1\n---\n---\nkind: X\nb: 2\n"
    documents = parse_documents(text, "f.yaml")
    assert [(d.index, d.line, d.body) for d in documents] == [
        (0, 1, {"a": 1}),
        (2, 4, {"kind": "X", "b": 2}),
    ]


def test_a_list_object_is_expanded_into_its_items() -> None:
    text = "kind: List\nitems:\n  - kind: A\n  - kind: B\n"
    documents = parse_documents(text, "f.yaml")
    assert [(d.index, d.item, d.line, d.body["kind"]) for d in documents] == [
        (0, 0, 3, "A"),
        (0, 1, 4, "B"),
    ]


def test_a_json_list_is_expanded_too() -> None:
    text = '{"kind": "CiliumNetworkPolicyList", "items": [{"kind": "A"}]}'
    (document,) = parse_documents(text, "f.json", "json")
    assert (document.item, document.body) == (0, {"kind": "A"})


def test_timestamps_stay_strings_as_kubectl_reads_them() -> None:
    (document,) = parse_documents("t: 2024-01-02T03:04:05Z\n", "f.yaml")
    assert document.body == {"t": "2024-01-02T03:04:05Z"}


def test_a_duplicate_key_is_an_error_naming_both_lines() -> None:
    with pytest.raises(DocumentError) as caught:
        parse_documents("a: 1\nb: 2\na: 3\n", "f.yaml")
    assert caught.value.line == 3
    assert "duplicate key 'a'" in str(caught.value)
    assert "first at line 1" in str(caught.value)


def test_invalid_yaml_is_an_error_with_file_line_and_column() -> None:
    with pytest.raises(DocumentError) as caught:
        parse_documents("a:\n  - b\n c: [\n", "bad.yaml")
    message = str(caught.value)
    assert message.startswith("bad.yaml:")
    assert caught.value.line is not None


def test_invalid_json_is_an_error_with_the_line() -> None:
    with pytest.raises(DocumentError) as caught:
        parse_documents('{\n  "a": 1,\n}', "bad.json", "json")
    assert caught.value.line == 3


def test_folders_are_walked_recursively_for_policy_files_only(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".git").mkdir()
    for name in ("a.yaml", "sub/b.yml", "sub/c.json", "notes.txt", ".git/d.yaml"):
        (tmp_path / name).write_text("{}")
    found = [Path(path).relative_to(tmp_path).as_posix() for path in expand_paths([str(tmp_path)])]
    assert found == ["a.yaml", "sub/b.yml", "sub/c.json"]


def test_stdin_is_read_as_yaml() -> None:
    documents = load_source("-", io.StringIO('{"kind": "A"}\n---\nkind: B\n'))
    assert [d.body["kind"] for d in documents] == ["A", "B"]
    assert documents[0].source == "<stdin>"


def test_missing_and_binary_files_are_input_errors_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_source(str(tmp_path / "missing.yaml"))
    binary = tmp_path / "blob.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match=r"blob\.yaml: not UTF-8"):
        load_source(str(binary))


def test_control_characters_are_a_yaml_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "ctl.yaml"
    path.write_text("a: \x00\x01\n")
    with pytest.raises(DocumentError):
        load_source(str(path))
