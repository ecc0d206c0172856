"""The pure parts of the local harness: names, kubeconfigs, binary lookup, results."""

from __future__ import annotations

import base64
import os
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from acns_operator.errors import HarnessError
from acns_operator.local.controlplane import (
    ControlPlaneBinaries,
    free_port,
    remove_stale_etcd_dirs,
)
from acns_operator.local.kube import (
    ApiError,
    ApiResponse,
    CommandResult,
    to_dns_label,
    unique_name,
    write_kubeconfig,
)

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@given(st.text(max_size=200))
def test_any_text_becomes_a_valid_dns_label(text: str) -> None:
    label = to_dns_label(text)
    assert DNS_LABEL.match(label)
    assert len(label) <= 63


@given(st.text(max_size=200))
def test_unique_names_are_valid_dns_labels_that_keep_their_prefix(prefix: str) -> None:
    name = unique_name(prefix)
    assert DNS_LABEL.match(name)
    assert len(name) <= 63
    assert name.startswith(to_dns_label(prefix, max_length=54))


def test_a_test_name_becomes_a_readable_label() -> None:
    assert to_dns_label("test_pod_ip[10.244.0.5-UDP]") == "test-pod-ip-10-244-0-5-udp"


def test_unique_names_from_one_prefix_differ() -> None:
    assert len({unique_name("t") for _ in range(200)}) == 200


def test_a_kubeconfig_embeds_server_ca_and_client_credentials(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "kc" / "config",
        server="https://127.0.0.1:6443",
        ca_pem=b"CA",
        cert_pem=b"CERT",
        key_pem=b"KEY",
        user="system:serviceaccount:ns:op",
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config = yaml.safe_load(path.read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    cluster = next(c for c in config["clusters"] if c["name"] == context["context"]["cluster"])
    user = next(u for u in config["users"] if u["name"] == context["context"]["user"])
    assert cluster["cluster"]["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == b"CA"
    assert base64.b64decode(user["user"]["client-certificate-data"]) == b"CERT"
    assert base64.b64decode(user["user"]["client-key-data"]) == b"KEY"
    assert user["name"] == "system:serviceaccount:ns:op"


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_binaries_come_from_kubebuilder_assets(tmp_path: Path) -> None:
    for name in ("kube-apiserver", "etcd", "kubectl", "helm"):
        _executable(tmp_path / name)
    found = ControlPlaneBinaries.from_environment({"KUBEBUILDER_ASSETS": str(tmp_path)})
    assert found == ControlPlaneBinaries(
        kube_apiserver=tmp_path / "kube-apiserver",
        etcd=tmp_path / "etcd",
        kubectl=tmp_path / "kubectl",
        helm=tmp_path / "helm",
    )


def test_a_test_asset_variable_overrides_one_binary(tmp_path: Path) -> None:
    for name in ("kube-apiserver", "etcd", "kubectl"):
        _executable(tmp_path / "assets" / name)
    own_etcd = _executable(tmp_path / "mine" / "etcd-3.5")
    found = ControlPlaneBinaries.from_environment(
        {"KUBEBUILDER_ASSETS": str(tmp_path / "assets"), "TEST_ASSET_ETCD": str(own_etcd)}
    )
    assert found.etcd == own_etcd
    assert found.kube_apiserver == tmp_path / "assets" / "kube-apiserver"


def test_kubectl_and_helm_may_come_from_path_and_helm_is_optional(tmp_path: Path) -> None:
    for name in ("kube-apiserver", "etcd"):
        _executable(tmp_path / "assets" / name)
    kubectl = _executable(tmp_path / "bin" / "kubectl")
    found = ControlPlaneBinaries.from_environment(
        {"KUBEBUILDER_ASSETS": str(tmp_path / "assets"), "PATH": str(tmp_path / "bin")}
    )
    assert found.kubectl == kubectl
    assert found.helm is None


def test_without_kubebuilder_assets_the_error_says_to_run_make_test(tmp_path: Path) -> None:
    with pytest.raises(HarnessError) as raised:
        ControlPlaneBinaries.from_environment({"PATH": str(tmp_path)})
    message = str(raised.value)
    assert "kube-apiserver not found (KUBEBUILDER_ASSETS is not set)" in message
    assert "make test" in message
    assert "make -s envtest" in message


def test_a_missing_binary_is_named_with_where_it_was_looked_for(tmp_path: Path) -> None:
    _executable(tmp_path / "kube-apiserver")
    _executable(tmp_path / "kubectl")
    with pytest.raises(HarnessError, match=r"etcd not found \(KUBEBUILDER_ASSETS: .*/etcd\)"):
        ControlPlaneBinaries.from_environment({"KUBEBUILDER_ASSETS": str(tmp_path), "PATH": ""})


def test_a_free_port_is_a_bindable_unprivileged_port() -> None:
    assert 1024 <= free_port() <= 65535


def test_a_failed_command_raises_with_its_output() -> None:
    result = CommandResult(("kubectl", "apply"), 1, "out", "denied: spec.egress[0]")
    with pytest.raises(HarnessError, match=r"(?s)kubectl apply exited with status 1.*spec.egress"):
        result.check()
    ok = CommandResult(("kubectl",), 0, "", "")
    assert ok.check() is ok


def test_an_api_error_shows_the_server_message_and_reason() -> None:
    response = ApiResponse(409, {"kind": "Status", "reason": "AlreadyExists", "message": "exists"})
    error = ApiError("POST", "/api/v1/nodes", response)
    assert str(error) == "POST /api/v1/nodes -> HTTP 409: exists"
    assert error.reason == "AlreadyExists"
    assert not response.ok


def _etcd_dir(base: Path, name: str, owner: int | None) -> Path:
    folder = base / f"acns-etcd-{name}"
    folder.mkdir()
    if owner is not None:
        (folder / "owner.pid").write_text(str(owner))
    return folder


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()  # reaped: the PID no longer exists
    return process.pid


def test_stale_etcd_folders_of_dead_sessions_are_removed_and_live_ones_kept(
    tmp_path: Path,
) -> None:
    dead = _etcd_dir(tmp_path, "dead", _dead_pid())
    ours = _etcd_dir(tmp_path, "ours", os.getpid())
    unowned = _etcd_dir(tmp_path, "unowned", None)
    other = tmp_path / "something-else"
    other.mkdir()
    removed = remove_stale_etcd_dirs(tmp_path, now=time.time() + 120)
    assert removed == [dead]
    assert not dead.exists()
    assert ours.is_dir()
    assert unowned.is_dir()
    assert other.is_dir()


def test_a_fresh_etcd_folder_is_kept_even_if_its_owner_is_gone(tmp_path: Path) -> None:
    young = _etcd_dir(tmp_path, "young", _dead_pid())
    assert remove_stale_etcd_dirs(tmp_path) == []
    assert young.is_dir()
