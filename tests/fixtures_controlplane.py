"""pytest fixtures for the real kube-apiserver + etcd (see acns_operator.local.controlplane).

- ``control_plane`` (session): one control plane for the whole run, with every CRD in
  the repository's ``crds/`` installed. Booting takes a few seconds, so tests share it
  and isolate themselves by namespace instead. Fails, never skips, when the binaries are
  missing: CI must not pass without the API tests.
- ``kubeconfig`` (session): the admin kubeconfig path.
- ``k8s_api`` / ``kubectl`` (session): admin clients (HTTPS and the kubectl binary).
- ``k8s_namespace`` (function): a fresh namespace named after the test.

The work folder (certificates, kubeconfigs, ``logs/etcd.log``, ``logs/kube-apiserver.log``)
is under pytest's basetemp, which keeps the last three runs: look there after a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from acns_operator.errors import HarnessError
from acns_operator.local.controlplane import ControlPlane, ControlPlaneBinaries
from acns_operator.local.kube import ApiClient, Kubectl, create_namespace

REPO_ROOT = Path(__file__).resolve().parent.parent
CRD_DIR = REPO_ROOT / "crds"


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A running etcd + kube-apiserver on loopback with the project's CRDs established."""
    problem = ""
    try:
        binaries = ControlPlaneBinaries.from_environment()
        cp = ControlPlane(
            binaries,
            crd_paths=sorted(CRD_DIR.glob("*.yaml")),
            work_dir=tmp_path_factory.mktemp("controlplane"),
        )
        cp.start()  # stops what it started before raising
    except HarnessError as exc:
        problem = f"the control plane did not start: {exc}"
    if problem:
        # Outside the except block, so the report shows the message, not a chained traceback.
        pytest.fail(problem, pytrace=False)
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane) -> Path:
    """The admin kubeconfig of the session's control plane (certificates embedded)."""
    return control_plane.kubeconfig


@pytest.fixture(scope="session")
def k8s_api(control_plane: ControlPlane) -> ApiClient:
    """An HTTPS client for the session's control plane, authenticated as cluster-admin."""
    return control_plane.api


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    """kubectl bound to the admin kubeconfig of the session's control plane."""
    return control_plane.kubectl


@pytest.fixture
def k8s_namespace(request: pytest.FixtureRequest, k8s_api: ApiClient) -> str:
    """A new namespace for this test, named after it (``<test-name>-<random>``).

    Not deleted afterwards: without a namespace controller a deleted namespace stays
    ``Terminating`` with its objects forever, so deleting buys nothing; unique names are
    the isolation, and the whole control plane goes away at the end of the session.
    """
    return create_namespace(k8s_api, prefix=request.node.name.removeprefix("test_")[:40])
