"""The control plane cleans up after itself and explains its failures.

Each test boots its own control plane (a few seconds each), apart from the session's.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from acns_operator.errors import HarnessError
from acns_operator.local.controlplane import ControlPlane, ControlPlaneBinaries

pytestmark = [pytest.mark.integration, pytest.mark.controlplane]


@pytest.fixture
def binaries() -> ControlPlaneBinaries:
    try:
        return ControlPlaneBinaries.from_environment()
    except HarnessError as exc:
        pytest.fail(str(exc), pytrace=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has exited and waits to be reaped.
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def test_stopping_ends_both_processes_and_removes_the_temporary_folders(
    binaries: ControlPlaneBinaries,
) -> None:
    cp = ControlPlane(binaries)
    with cp:
        pids = list(cp.pids.values())
        work_dir = cp.work_dir
        etcd_data = cp.etcd_data_dir
        assert len(pids) == 2
        assert all(_alive(pid) for pid in pids)
        assert cp.kubectl.run("get", "namespace", "default").check().stdout
        assert etcd_data is not None
        assert etcd_data.is_dir()
    assert not any(_alive(pid) for pid in pids)
    assert not work_dir.exists()
    assert not etcd_data.exists()
    cp.stop()  # a second stop is harmless


def test_an_api_server_that_cannot_start_fails_with_its_log_and_leaves_nothing_running(
    binaries: ControlPlaneBinaries, tmp_path: Path
) -> None:
    cp = ControlPlane(binaries, work_dir=tmp_path, extra_apiserver_args=["--no-such-flag=1"])
    with pytest.raises(HarnessError) as raised:
        cp.start()
    message = str(raised.value)
    assert "kube-apiserver" in message
    assert "exited with status" in message
    assert "unknown flag: --no-such-flag" in message  # the log tail is in the error
    assert str(tmp_path / "logs" / "kube-apiserver.log") in message
    assert not any(_alive(pid) for pid in cp.pids.values())
    assert cp.etcd_data_dir is None
    # A work folder the caller gave is kept, with the logs, for the post-mortem.
    assert (tmp_path / "logs" / "etcd.log").is_file()


def test_a_crd_the_api_server_rejects_fails_the_boot_naming_the_crd_and_the_reason(
    binaries: ControlPlaneBinaries, tmp_path: Path
) -> None:
    bad = tmp_path / "bad-crd.yaml"
    bad.write_text(
        """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.acns.local
spec:
  group: example.acns.local
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            metadata: {type: object, description: "not allowed here"}
"""
    )
    cp = ControlPlane(binaries, crd_paths=[bad], work_dir=tmp_path / "work")
    with pytest.raises(HarnessError, match=r"could not create CRD gadgets\.example\.acns\.local"):
        cp.start()
    assert not any(_alive(pid) for pid in cp.pids.values())
