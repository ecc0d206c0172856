"""``hack/envtest-assets.sh`` (``make envtest``) without building anything.

Each run gets its own cache folder and a ``go`` on PATH that records any call and
fails, so a test proves which runs build nothing. Fake binaries stand in for
kube-apiserver, etcd, kubectl and helm.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "envtest-assets.sh"
NAMES = ("etcd", "kube-apiserver", "kubectl", "helm")
VERSIONS = {
    "ACNS_K8S_VERSION": "v1.34.4",
    "ACNS_ETCD_VERSION": "v3.5.35",
    "ACNS_HELM_VERSION": "v3.19.0",
}


def fake_binaries(folder: Path, names: tuple[str, ...] = NAMES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = folder / name
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
    return folder


def run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    tools = fake_binaries(tmp_path / "tools", ())
    go = tools / "go"
    go.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "go-calls"}\nexit 3\n')
    go.chmod(0o755)
    base = {
        key: value
        for key, value in os.environ.items()
        if key != "KUBEBUILDER_ASSETS" and not key.startswith("TEST_ASSET_")
    }
    return subprocess.run(
        ["bash", str(SCRIPT)],
        env={
            **base,
            **VERSIONS,
            "ACNS_CACHE_DIR": str(tmp_path / "cache"),
            "PATH": f"{tools}:/usr/bin:/bin",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def go_was_called(tmp_path: Path) -> bool:
    return (tmp_path / "go-calls").exists()


def test_kubebuilder_assets_is_used_as_it_is_and_printed_as_the_only_stdout_line(
    tmp_path: Path,
) -> None:
    assets = fake_binaries(tmp_path / "setup-envtest")
    result = run(tmp_path, KUBEBUILDER_ASSETS=str(assets))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(assets)]
    assert "[envtest-assets]" in result.stderr  # progress goes to stderr
    assert not go_was_called(tmp_path)


def test_a_test_asset_variable_overrides_one_binary_through_a_folder_of_links(
    tmp_path: Path,
) -> None:
    assets = fake_binaries(tmp_path / "setup-envtest")
    own_etcd = fake_binaries(tmp_path / "mine", ("etcd",)) / "etcd"
    result = run(tmp_path, KUBEBUILDER_ASSETS=str(assets), TEST_ASSET_ETCD=str(own_etcd))
    assert result.returncode == 0, result.stderr
    folder = Path(result.stdout.splitlines()[-1])
    assert folder != assets
    assert (folder / "etcd").resolve() == own_etcd
    assert (folder / "kube-apiserver").resolve() == assets / "kube-apiserver"
    assert not go_was_called(tmp_path)


def test_a_kubebuilder_assets_folder_without_kube_apiserver_fails_naming_it(
    tmp_path: Path,
) -> None:
    assets = fake_binaries(tmp_path / "partial", ("etcd", "kubectl", "helm"))
    result = run(tmp_path, KUBEBUILDER_ASSETS=str(assets))
    assert result.returncode != 0
    assert "no executable kube-apiserver" in result.stderr
    assert result.stdout == ""


def test_a_second_run_over_a_built_cache_builds_nothing_and_prints_the_same_folder(
    tmp_path: Path,
) -> None:
    versioned = tmp_path / "cache" / "envtest" / "k8s-v1.34.4-etcd-v3.5.35-helm-v3.19.0-r2"
    fake_binaries(versioned)
    first = run(tmp_path)
    second = run(tmp_path)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.splitlines() == second.stdout.splitlines() == [str(versioned)]
    assert "cached in" in second.stderr
    assert not go_was_called(tmp_path)


def test_without_binaries_or_overrides_the_script_goes_to_go_to_build_them(
    tmp_path: Path,
) -> None:
    result = run(tmp_path)
    # the fake go fails (``go env GOVERSION`` prints nothing): nothing is half-installed
    assert result.returncode != 0
    assert go_was_called(tmp_path)
    assert result.stdout == ""


@pytest.mark.parametrize("variable", ["TEST_ASSET_KUBE_APISERVER", "TEST_ASSET_HELM"])
def test_an_override_that_is_not_executable_is_refused(tmp_path: Path, variable: str) -> None:
    assets = fake_binaries(tmp_path / "setup-envtest")
    result = run(tmp_path, KUBEBUILDER_ASSETS=str(assets), **{variable: str(tmp_path / "nope")})
    assert result.returncode != 0
    assert f"{variable}={tmp_path / 'nope'} is not an executable file" in result.stderr
