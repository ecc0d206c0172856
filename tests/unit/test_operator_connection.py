"""Kubeconfig and in-cluster connections, as kopf and our client both use them."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from acns_operator.errors import ConfigurationError
from acns_operator.operator.connection import load_connection, load_in_cluster, load_kubeconfig
from acns_operator.operator.handlers import to_connection_info


def write_kubeconfig(path: Path, user: dict[str, object], cluster: dict[str, object]) -> Path:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "main",
        "contexts": [
            {"name": "main", "context": {"cluster": "c", "user": "u", "namespace": "team"}},
            {"name": "other", "context": {"cluster": "c", "user": "missing"}},
        ],
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443/", **cluster}}],
        "users": [{"name": "u", "user": user}],
    }
    path.write_text(yaml.safe_dump(document))
    return path


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_embedded_certificates_are_read_from_the_data_fields(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "config",
        {"client-certificate-data": b64(b"CERT"), "client-key-data": b64(b"KEY")},
        {"certificate-authority-data": b64(b"CA")},
    )
    connection = load_kubeconfig(path)
    assert connection.server == "https://127.0.0.1:6443"
    assert (connection.ca_data, connection.certificate_data) == (b"CA", b"CERT")
    assert connection.private_key_data == b"KEY"
    assert connection.default_namespace == "team"


def test_file_references_are_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_bytes(b"CA-FILE")
    (tmp_path / "token").write_text("tok-1\n")
    path = write_kubeconfig(
        tmp_path / "config", {"tokenFile": "token"}, {"certificate-authority": "ca.crt"}
    )
    connection = load_kubeconfig(path)
    assert connection.ca_data == b"CA-FILE"
    assert connection.bearer_token() == "tok-1"
    (tmp_path / "token").write_text("tok-2\n")
    assert connection.bearer_token() == "tok-2"  # re-read: projected tokens rotate
    assert to_connection_info(connection).token == "tok-2"  # noqa: S105 - test data
    assert to_connection_info(connection).scheme == "Bearer"


def test_exec_plugins_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config", {"exec": {"command": "aws"}}, {})
    with pytest.raises(ConfigurationError, match="exec/auth-provider"):
        load_kubeconfig(path)


def test_an_unknown_context_user_is_a_configuration_error(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config", {"token": "t"}, {})
    with pytest.raises(ConfigurationError, match="missing"):
        load_kubeconfig(path, "other")


def test_a_missing_kubeconfig_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_connection(str(tmp_path / "absent"))


def test_in_cluster_credentials_come_from_the_service_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ca.crt").write_bytes(b"CA")
    (tmp_path / "namespace").write_text("acns-system")
    (tmp_path / "token").write_text("sa-token")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    connection = load_in_cluster(tmp_path)
    assert connection.server == "https://10.0.0.1:443"
    assert connection.default_namespace == "acns-system"
    assert connection.bearer_token() == "sa-token"


def test_outside_a_cluster_in_cluster_loading_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigurationError, match="not in a cluster"):
        load_in_cluster()
