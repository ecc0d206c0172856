"""pytest fixtures for network-namespace test hosts (see acns_operator.local.topology).

``topology``
    A fresh, empty :class:`~acns_operator.local.topology.Topology` per test (only the
    outside namespace; about 15 ms). Add nodes, pods, DNS and listeners yourself.
``cluster``
    The usual cluster on top of ``topology`` (about 0.3 s): nodes ``node1`` and
    ``node2``, the cluster DNS pod ``kube-dns`` (10.244.1.53, dnsmasq serving
    :func:`~acns_operator.local.dnsserver.default_test_zone`) behind Service
    10.244.250.10, and every internet address of the zone as a host with TCP echo
    listeners on ports 80 and 443. Add pods with ``cluster.topology.add_pod(...)``.
``netns_prerequisites``
    Session-wide check that the harness can run: root, ``ip``, ``nsenter``, ``nft``,
    ``dnsmasq`` and ``dig``. When something is missing the test FAILS (never skips) and
    says what to install (``make deps``).

When a test using these fixtures fails, the teardown prints the addresses, routes and
nftables rules of every namespace and the tail of every process log (shown by pytest
under "Captured stdout teardown").
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from acns_operator.local.netns import check_prerequisites
from acns_operator.local.topology import Cluster, Topology, build_cluster

_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember whether a test's call phase failed, for the topology's failure report."""
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_FAILED] = True
    return report


@pytest.fixture(scope="session")
def netns_prerequisites() -> None:
    """Fail (not skip) with what to install when root or a harness program is missing."""
    problems = check_prerequisites()
    if problems:
        pytest.fail(
            "network-namespace tests cannot run: " + "; ".join(problems) + ". "
            "Install the system packages with `make deps` (hack/install-deps.sh) as root.",
            pytrace=False,
        )


@pytest.fixture
def topology(
    netns_prerequisites: None, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Topology]:
    """A fresh topology (outside namespace only), removed after the test."""
    with Topology(workdir=tmp_path / "netns") as topo:
        yield topo
        if request.node.stash.get(_FAILED, False):
            _print_failure_report(topo)


@pytest.fixture
def cluster(topology: Topology) -> Cluster:
    """Two nodes, cluster DNS behind 10.244.250.10, internet hosts listening on 80/443."""
    return build_cluster(topology)


def _print_failure_report(topo: Topology) -> None:
    print(f"\n----- network namespaces of {topo.prefix} at failure -----")
    print(topo.dump())
    logs = sorted((topo.workdir / "logs").glob("*.log")) + sorted(
        (topo.workdir / "dns").glob("*.log")
    )
    for log in logs:
        lines = log.read_text(errors="replace").splitlines()[-20:]
        print(f"----- {log.name} (last {len(lines)} lines)")
        print("\n".join(lines))
