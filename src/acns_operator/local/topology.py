"""Test clusters built from network namespaces: the address plan and :class:`Topology`.

A :class:`Topology` creates, for one run, an "outside" namespace (the internet and the
fabric router), "node" namespaces (Kubernetes nodes: host network, where the agent and
the DNS proxy run), "pod" namespaces attached to a node by a veth pair, a real dnsmasq
as the cluster DNS behind a Service ClusterIP, and TCP echo listeners. Everything it
created is removed when it closes, even after a failure::

    with Topology() as topo:
        node1, node2 = topo.add_node("node1"), topo.add_node("node2")
        dns = topo.start_dns_server()              # pod kube-dns on node1, 10.244.1.53,
                                                   # behind Service 10.244.250.10:53
        client = topo.add_pod(node2, "client")     # 10.244.2.10
        topo.start_tcp_listener("192.0.2.10", 443)
        assert client.dig("payments.example.test").addresses == ["192.0.2.10"]
        assert client.tcp_connect("192.0.2.10", 443)

Address plan (every address lives only inside the run's namespaces)::

    pod ns acns-<run>-<pod>     node ns acns-<run>-<node>          outside ns acns-<run>-out
    +--------------------+      +------------------------------+    +---------------------------+
    | eth0 10.244.N.x/32 |veth  | lxcK (no address, proxy ARP) |    | bridge "fabric"           |
    | default via        |------| 10.244.N.x/32 dev lxcK       |    |   10.244.254.254/24       |
    |   169.254.1.1      |      | unreachable 10.244.N.0/24    |veth|   port nodeN              |
    +--------------------+      | eth0 10.244.254.N/24         |----| 10.244.N.0/24 via .254.N  |
                                | default via 10.244.254.254   |    | lo: "internet" /32s in    |
                                | ip_forward=1                 |    |   192.0.2/24, 198.51.100/ |
                                | nft ip acns_test_kube_proxy  |    |   24, 203.0.113/24        |
                                +------------------------------+    | ip_forward=1, no default  |
                                                                    +---------------------------+

=========================  ============================================================
10.244.N.0/24              pods of node N (N = 1, 2, ... in the order nodes are added);
                           pods get .10, .11, ... unless an address is given; .53 is
                           kept for a DNS pod on that node
10.244.254.N/24            node N's transit address (its "host IP"); the router is .254
10.244.250.0/24            Service ClusterIPs (the control plane's
                           ``--service-cluster-ip-range``); cluster DNS is 10.244.250.10
169.254.1.1                every pod's default gateway (answered by proxy ARP on the
                           node's veth end, as Calico does)
192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24
                           "internet" hosts, /32s on the outside namespace's loopback
                           (not a dummy interface: some kernels lack that driver);
                           198.51.100.53 is kept for an optional internet DNS server
=========================  ============================================================

Pods route like Calico/Cilium pods: a /32 on ``eth0``, a default route to a link-local
gateway, and on the node a host route ``10.244.N.x/32 dev lxcK``. The node's own pod CIDR
is ``unreachable`` so a packet for a pod that does not exist fails at once instead of
bouncing between node and router. Nodes are on one L2 segment (the ``fabric`` bridge) but
have no routes to each other's pod CIDRs: pod-to-pod traffic between nodes goes through
the router (which sends no ICMP redirects), like a routed pod network. The outside
namespace has no default route and no link to the machine's real interfaces, so nothing
can leave: a packet for any other address gets "network unreachable" there.

Cluster DNS follows design.md §1: a DNS *pod* (``kube-dns`` on the first node, address
10.244.1.53) runs a real dnsmasq (:mod:`acns_operator.local.dnsserver`); the harness
plays kube-proxy with a DNAT from the Service ClusterIP (UDP and TCP port 53) to that
address in every node namespace, in its own table ``ip acns_test_kube_proxy`` (chains at
``prerouting`` and ``output``, priority ``dstnat`` = -100). So a query from a pod on
node 2 to 10.244.250.10 is translated on node 2 and crosses node 2 -> router -> node 1 ->
DNS pod. A redirect that must see the ClusterIP (the agent's) has to act before priority
-100 (or mark the packet ``notrack``, which also bypasses this DNAT, as with kube-proxy).

IPv6 is off in every namespace (an IPv4-only cluster, as the AKS profile requires).

Names: the run ID is 6 random hex digits; namespaces are ``acns-<run>-out``,
``acns-<run>-<node>`` and ``acns-<run>-<pod>``. Interfaces are created directly inside
their namespaces, never in the machine's own namespace, so their short names (``eth0``,
``lxcK``, ``nodeN``: under Linux's 15-character limit) never collide across runs.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from acns_operator.errors import HarnessError
from acns_operator.local.dnsserver import (
    DigResult,
    DnsServer,
    DnsZone,
    default_test_zone,
    dig_command,
    parse_dig,
)
from acns_operator.local.hosts import HostServer, Listener
from acns_operator.local.netns import (
    NETNS_RUN_DIR,
    REGISTRY_DIR,
    ManagedProcess,
    Netns,
    RunRegistry,
    kill_processes_in,
)

__all__ = [
    "DNS_SERVICE_IP",
    "INTERNET_DNS_IP",
    "INTERNET_NETWORKS",
    "KUBE_PROXY_TABLE",
    "POD_GATEWAY_IP",
    "POD_NETWORK",
    "ROUTER_IP",
    "SERVICE_NETWORK",
    "TRANSIT_NETWORK",
    "Cluster",
    "HeldConnection",
    "Host",
    "Node",
    "Outside",
    "Pod",
    "Service",
    "Topology",
    "build_cluster",
    "list_namespaces",
]

POD_NETWORK = ipaddress.IPv4Network("10.244.0.0/16")
"""Every pod, node and Service address of the test cluster lies in here."""
SERVICE_NETWORK = ipaddress.IPv4Network("10.244.250.0/24")
"""Service ClusterIPs: the test control plane's ``--service-cluster-ip-range``."""
TRANSIT_NETWORK = ipaddress.IPv4Network("10.244.254.0/24")
"""The fabric between the nodes and the router: node N is .N, the router .254."""
ROUTER_IP = "10.244.254.254"
"""The fabric router's address (in the outside namespace)."""
POD_GATEWAY_IP = "169.254.1.1"
"""Every pod's default gateway, answered by proxy ARP on the node's end of the veth."""
DNS_SERVICE_IP = "10.244.250.10"
"""The cluster DNS Service ClusterIP (kube-dns)."""
INTERNET_DNS_IP = "198.51.100.53"
"""Where :meth:`Topology.start_internet_dns_server` puts an "internet" DNS server."""
INTERNET_NETWORKS = (
    ipaddress.IPv4Network("192.0.2.0/24"),
    ipaddress.IPv4Network("198.51.100.0/24"),
    ipaddress.IPv4Network("203.0.113.0/24"),
)
"""Where "internet" hosts may live (documentation ranges, RFC 5737)."""
KUBE_PROXY_TABLE = "acns_test_kube_proxy"
"""The nftables table (family ``ip``) of the kube-proxy stand-in in each node."""

MAX_NODES = 200
_FIRST_POD_HOST = 10
_DNS_POD_HOST = 53
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
_OUTSIDE_SUFFIX = "out"

Protocol = Literal["tcp", "udp"]


def list_namespaces() -> list[str]:
    """Names of every named network namespace on the machine (``ip netns list``)."""
    try:
        return sorted(path.name for path in NETNS_RUN_DIR.iterdir())
    except FileNotFoundError:
        return []


def _ip_in(address: str, networks: Iterable[ipaddress.IPv4Network]) -> bool:
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


class HeldConnection:
    """A TCP connection a host keeps open, to check later that it still carries data.

    The socket belongs to the host's namespace (a real kernel connection with the host's
    address, visible to conntrack and nftables on the node); the test process holds it,
    so there is no extra process to track. The peer must echo (the harness listeners do).
    """

    def __init__(self, sock: socket.socket, source: Host, ip: str, port: int) -> None:
        """Wrap a connected socket (see :meth:`Host.open_connection`)."""
        self.sock = sock
        self.source = source
        self.ip = ip
        self.port = port
        self.local_port: int = sock.getsockname()[1]
        self._pending = b""
        self._counter = 0
        self.closed = False

    def __repr__(self) -> str:
        return (
            f"HeldConnection({self.source.name} {self.source.ip}:{self.local_port} -> "
            f"{self.ip}:{self.port})"
        )

    def is_alive(self, timeout: float = 1.0) -> bool:
        """Send a probe and wait up to ``timeout`` s for its echo.

        False when the echo does not come back in time (e.g. a firewall drops the
        packets; the probe may still arrive later and is then skipped) or when the
        connection was reset or closed.
        """
        if self.closed:
            return False
        self._counter += 1
        token = f"<probe {self._counter} {secrets.token_hex(4)}>".encode()
        deadline = time.monotonic() + timeout
        try:
            self.sock.settimeout(timeout)
            self.sock.sendall(token)
            while token not in self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.sock.settimeout(remaining)
                chunk = self.sock.recv(65536)
                if not chunk:
                    self.close()
                    return False
                self._pending += chunk
        except TimeoutError:
            return False
        except OSError:
            self.close()
            return False
        # Echoes of earlier, timed-out probes arrive before this one: drop them too.
        self._pending = self._pending.split(token, 1)[1]
        return True

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self.closed = True
        self.sock.close()


class Host:
    """A machine of the topology: a network namespace, its main address, its processes."""

    def __init__(self, topology: Topology, name: str, netns: Netns, ip: str) -> None:
        """Describe a host; :class:`Topology` creates them."""
        self.topology = topology
        self.name = name
        self.netns = netns
        self.ip = ip
        self._host_server: HostServer | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.ip}, netns={self.netns.name!r})"

    def run(
        self,
        argv: Sequence[str],
        timeout: float = 10.0,
        *,
        check: bool = False,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside this host's namespace and return its result.

        With ``check`` a non-zero exit raises :class:`HarnessError` (with stderr); a
        timeout always does.
        """
        return self.netns.run(argv, timeout=timeout, check=check, input=input)

    def spawn(
        self,
        argv: Sequence[str],
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        pipe_stdin: bool = False,
        pipe_stdout: bool = False,
    ) -> ManagedProcess:
        """Start a long-running process in this host; it is stopped at teardown.

        Its output goes to a log file in the topology's work directory
        (``process.log_path``). Stop it earlier with ``stop()`` or ``kill()``.
        """
        return self.topology._spawn(
            self, argv, name=name, env=env, pipe_stdin=pipe_stdin, pipe_stdout=pipe_stdout
        )

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
        """A new socket in this host's namespace (the caller closes it)."""
        return self.netns.socket(family, type)

    def dig(
        self,
        name: str,
        server: str = DNS_SERVICE_IP,
        qtype: str = "A",
        *,
        tcp: bool = False,
        port: int = 53,
        timeout: float = 2.0,
        extra: Sequence[str] = (),
    ) -> DigResult:
        """Query ``server`` for ``name`` with ``dig`` from this host (one try).

        ``extra`` adds dig options (e.g. ``+ignore`` to see a truncated UDP reply
        instead of the TCP retry). No reply within ``timeout`` gives ``rcode=None``.
        """
        argv = dig_command(name, server, qtype, tcp=tcp, port=port, timeout=timeout, extra=extra)
        # Two tries' worth of wall time: a truncated UDP reply is retried over TCP.
        result = self.run(argv, timeout=2 * max(timeout, 1.0) + 5.0)
        return parse_dig(result.stdout, result.stderr, result.returncode)

    def tcp_connect(self, ip: str, port: int, timeout: float = 2.0) -> bool:
        """Whether a TCP connection from this host to ``ip:port`` is established in time."""
        with self.socket() as sock:
            sock.settimeout(timeout)
            try:
                sock.connect((ip, port))
            except OSError:  # refused, unreachable, or timed out (TimeoutError)
                return False
            return True

    def open_connection(self, ip: str, port: int, timeout: float = 2.0) -> HeldConnection:
        """Open a TCP connection to an echo listener and keep it; closed at teardown."""
        sock = self.socket()
        sock.settimeout(timeout)
        try:
            sock.connect((ip, port))
        except OSError as exc:
            sock.close()
            raise HarnessError(
                f"{self.name} ({self.ip}) could not connect to {ip}:{port}: {exc}"
            ) from exc
        connection = HeldConnection(sock, self, ip, port)
        self.topology._connections.append(connection)
        if not connection.is_alive(timeout):
            raise HarnessError(f"{connection!r}: the peer did not echo (is it a harness listener?)")
        return connection

    def listen(self, port: int, ip: str | None = None) -> Listener:
        """A TCP echo listener in this host on ``ip`` (default: the host's address)."""
        return self._hosts_server().listen(ip or self.ip, port)

    def listen_all(self, addresses: Sequence[tuple[str, int]]) -> list[Listener]:
        """TCP echo listeners on many ``(ip, port)`` of this host, in one round trip."""
        return self._hosts_server().listen_all(addresses)

    def _hosts_server(self) -> HostServer:
        if self._host_server is None:
            log_path = self.topology.workdir / "logs" / f"hosts-{self.name}.log"
            self._host_server = HostServer.start(self.netns, log_path=log_path)
            self.topology._processes.append(self._host_server.process)
            self.topology._host_servers.append(self._host_server)
        return self._host_server


class Outside(Host):
    """The outside namespace: the fabric router plus every "internet" host address.

    Internet hosts are /32 addresses on its loopback, so the router itself answers for
    them: one namespace serves any number of internet hosts.
    """

    def __init__(self, topology: Topology, netns: Netns) -> None:
        """Describe the outside namespace (created by :class:`Topology`)."""
        super().__init__(topology, _OUTSIDE_SUFFIX, netns, ROUTER_IP)
        self.internet_hosts: set[str] = set()


class Node(Host):
    """A Kubernetes node: host network, transit address 10.244.254.N, pods 10.244.N.0/24."""

    def __init__(self, topology: Topology, name: str, netns: Netns, index: int) -> None:
        """Describe node number ``index`` (created by :meth:`Topology.add_node`)."""
        super().__init__(topology, name, netns, str(TRANSIT_NETWORK.network_address + index))
        self.index = index
        self.pod_cidr = ipaddress.IPv4Network(f"10.244.{index}.0/24")
        self.pods: dict[str, Pod] = {}


class Pod(Host):
    """A pod: its own namespace, ``eth0`` with a /32, attached to ``node`` by a veth pair."""

    def __init__(
        self, topology: Topology, name: str, netns: Netns, ip: str, node: Node, host_ifname: str
    ) -> None:
        """Describe a pod (created by :meth:`Topology.add_pod`)."""
        super().__init__(topology, name, netns, ip)
        self.node = node
        self.host_ifname = host_ifname
        """The node's end of the pod's veth pair (``lxcK``), e.g. for nftables ``iifname``."""


@dataclass(frozen=True)
class Service:
    """A Service port that the kube-proxy stand-in DNATs to one backend on every node."""

    cluster_ip: str
    port: int
    protocol: Protocol
    backend_ip: str
    backend_port: int
    name: str = ""

    def to_nft_rule(self) -> str:
        """The nftables rule of this Service port."""
        comment = f' comment "{self.name}"' if self.name else ""
        return (
            f"ip daddr {self.cluster_ip} {self.protocol} dport {self.port} "
            f"dnat to {self.backend_ip}:{self.backend_port}{comment}"
        )


class Topology:
    """Builds a test cluster from network namespaces and removes it all on close.

    Use it as a context manager. ``workdir`` receives configuration and process logs
    (default: a temporary folder removed on close). See the module docstring for the
    address plan.
    """

    def __init__(
        self,
        *,
        workdir: Path | None = None,
        run_id: str | None = None,
        registry_dir: Path = REGISTRY_DIR,
    ) -> None:
        """Prepare a topology; namespaces are created by :meth:`open` (or ``with``)."""
        self.run_id = run_id or secrets.token_hex(3)
        if not re.fullmatch(r"[0-9a-f]{6}", self.run_id):
            raise HarnessError(f"run ID {self.run_id!r} must be 6 hexadecimal digits")
        self.prefix = f"acns-{self.run_id}"
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self.registry = RunRegistry(self.run_id, registry_dir)
        self.nodes: dict[str, Node] = {}
        self.pods: dict[str, Pod] = {}
        self.services: list[Service] = []
        self.dns_servers: list[DnsServer] = []
        self._outside: Outside | None = None
        self._namespaces: list[Netns] = []
        self._processes: list[ManagedProcess] = []
        self._host_servers: list[HostServer] = []
        self._connections: list[HeldConnection] = []
        self._pod_counter = 0
        self._opened = False
        self._closed = False

    def __repr__(self) -> str:
        return f"Topology({self.prefix}, nodes={list(self.nodes)}, pods={list(self.pods)})"

    # --- life cycle ------------------------------------------------------------------

    def __enter__(self) -> Topology:
        self.open()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            self.close()
        except HarnessError as cleanup_error:
            if exc is None:
                raise
            # Keep the test's own failure as the error; say what teardown could not do.
            exc.add_note(f"and the topology's teardown failed: {cleanup_error}")

    def open(self) -> None:
        """Create the outside namespace: the fabric bridge and the router."""
        if self._opened:
            return
        self._opened = True
        atexit.register(self.close)
        try:
            netns = self._create_netns(f"{self.prefix}-{_OUTSIDE_SUFFIX}")
            netns.set_sysctls(
                {
                    "net.ipv4.ip_forward": "1",
                    # Pod traffic between nodes enters and leaves through the fabric
                    # bridge: routing it there is intended, not worth a redirect.
                    "net.ipv4.conf.all.send_redirects": "0",
                    "net.ipv4.conf.default.send_redirects": "0",
                }
            )
            netns.ip(
                "link add fabric type bridge",
                f"addr add {ROUTER_IP}/{TRANSIT_NETWORK.prefixlen} dev fabric",
                "link set fabric up",
            )
            self._outside = Outside(self, netns)
        except BaseException:
            self.close()
            raise

    @property
    def outside(self) -> Outside:
        """The outside namespace (internet hosts and router)."""
        if self._outside is None:
            raise HarnessError("the topology is not open: use `with Topology() as topo:`")
        return self._outside

    def namespace_names(self) -> list[str]:
        """Names of the namespaces this topology created, in creation order."""
        return [netns.name for netns in self._namespaces]

    def process_ids(self) -> list[int]:
        """PIDs of every process this topology started (running or not)."""
        dns = [process.pid for server in self.dns_servers for process in server.processes]
        return [process.pid for process in self._processes] + dns

    def close(self) -> None:
        """Remove everything this topology created, in reverse order; raise what failed.

        Connections are closed, processes stopped by PID (SIGTERM, then SIGKILL), any
        other process left inside one of the namespaces is killed, and the namespaces are
        deleted. Every step runs even when an earlier one fails.
        """
        if self._closed or not self._opened:
            return
        self._closed = True
        atexit.unregister(self.close)
        errors: list[str] = []
        for connection in self._connections:
            connection.close()
        for host_server in self._host_servers:
            with _collect(errors, f"stopping {host_server.process.name}"):
                host_server.stop()
        for server in self.dns_servers:
            with _collect(errors, f"stopping {server!r}"):
                server.stop()
        for process in reversed(self._processes):
            with _collect(errors, f"stopping {process.name} (pid {process.pid})"):
                process.stop()
        for netns in reversed(self._namespaces):
            with _collect(errors, f"removing network namespace {netns.name}"):
                kill_processes_in(netns)
                netns.delete()
        left = [name for name in list_namespaces() if name.startswith(f"{self.prefix}-")]
        if left:
            errors.append(f"namespaces still present after teardown: {left}")
        else:
            self.registry.remove()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise HarnessError("topology teardown failed: " + "; ".join(errors))

    # --- building --------------------------------------------------------------------

    def add_node(self, name: str) -> Node:
        """Add node ``name`` (index N = number of nodes so far + 1) linked to the router."""
        self._check_name(name)
        index = len(self.nodes) + 1
        if index > MAX_NODES:
            raise HarnessError(f"at most {MAX_NODES} nodes fit the address plan")
        netns = self._create_netns(f"{self.prefix}-{name}")
        node = Node(self, name, netns, index)
        netns.set_sysctls({"net.ipv4.ip_forward": "1"})
        netns.ip(f"link add eth0 type veth peer name node{index} netns {self.outside.netns.name}")
        netns.ip(
            f"addr add {node.ip}/{TRANSIT_NETWORK.prefixlen} dev eth0",
            "link set eth0 up",
            f"route add default via {ROUTER_IP} dev eth0",
            f"route add unreachable {node.pod_cidr}",
        )
        self.outside.netns.ip(
            f"link set node{index} master fabric",
            f"link set node{index} up",
            f"route add {node.pod_cidr} via {node.ip} dev fabric",
        )
        self.nodes[name] = node
        self._apply_services(node)
        return node

    def add_pod(self, node: Node | str, name: str, ip: str | None = None) -> Pod:
        """Add pod ``name`` on ``node`` with ``ip`` (default: the next free 10.244.N.x)."""
        node = self._node(node)
        self._check_name(name)
        address = self._pod_address(node, ip)
        self._pod_counter += 1
        host_ifname = f"lxc{self._pod_counter}"
        netns = self._create_netns(f"{self.prefix}-{name}")
        node.netns.ip(
            f"link add {host_ifname} type veth peer name eth0 netns {netns.name}",
            f"link set {host_ifname} up",
            f"route add {address}/32 dev {host_ifname} scope link",
        )
        node.netns.set_sysctls(
            {
                f"net.ipv4.conf.{host_ifname}.proxy_arp": "1",
                # The kernel delays proxy ARP replies by up to 0.8 s by default.
                f"net.ipv4.neigh.{host_ifname}.proxy_delay": "0",
            }
        )
        netns.ip(
            f"addr add {address}/32 dev eth0",
            "link set eth0 up",
            f"route add {POD_GATEWAY_IP} dev eth0 scope link",
            f"route add default via {POD_GATEWAY_IP} dev eth0",
        )
        pod = Pod(self, name, netns, address, node, host_ifname)
        node.pods[name] = pod
        self.pods[name] = pod
        return pod

    def add_internet_host(self, *ips: str) -> None:
        """Give the outside namespace these "internet" addresses (idempotent)."""
        new = []
        for ip in ips:
            if not _ip_in(ip, INTERNET_NETWORKS):
                raise HarnessError(
                    f"internet host {ip} is outside the test networks "
                    "192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24"
                )
            if ip not in self.outside.internet_hosts and ip not in new:
                new.append(ip)
        if new:
            self.outside.netns.ip(*(f"addr add {ip}/32 dev lo" for ip in new))
            self.outside.internet_hosts.update(new)

    def start_tcp_listener(self, ip: str, port: int) -> Listener:
        """A TCP echo listener on ``ip:port`` in whichever host owns ``ip``.

        An internet address that is not a host yet becomes one.
        """
        if _ip_in(ip, INTERNET_NETWORKS):
            self.add_internet_host(ip)
        return self.host_for(ip).listen(port, ip)

    def start_dns_server(
        self,
        zone: DnsZone | None = None,
        *,
        node: Node | str | None = None,
        ip: str | None = None,
        name: str = "kube-dns",
        service_ip: str | None = DNS_SERVICE_IP,
        log_queries: bool = True,
    ) -> DnsServer:
        """Run the cluster DNS: a pod ``name`` with dnsmasq, behind a Service ClusterIP.

        Defaults: the first node, address 10.244.N.53, :func:`default_test_zone`, and
        Service 10.244.250.10 port 53 (UDP and TCP) DNATed to it on every node
        (``service_ip=None``: no Service).
        """
        node = self._node(node if node is not None else self._first_node())
        address = ip or str(node.pod_cidr.network_address + _DNS_POD_HOST)
        pod = self.add_pod(node, name, address)
        server = DnsServer(
            pod.netns,
            pod.ip,
            zone or default_test_zone(),
            workdir=self.workdir / "dns",
            name=name,
            log_queries=log_queries,
        )
        self._start_dns(server)
        if service_ip is not None:
            for protocol in ("udp", "tcp"):
                self._register_service(
                    Service(service_ip, 53, protocol, pod.ip, 53, f"kube-system/{name}")
                )
            self._apply_services_everywhere()
            server.service_ip = service_ip
        return server

    def start_internet_dns_server(
        self, zone: DnsZone | None = None, *, ip: str = INTERNET_DNS_IP, name: str = "internet-dns"
    ) -> DnsServer:
        """Run an "internet" DNS server (dnsmasq) on ``ip`` in the outside namespace."""
        self.add_internet_host(ip)
        server = DnsServer(
            self.outside.netns,
            ip,
            zone or default_test_zone(),
            workdir=self.workdir / "dns",
            name=name,
        )
        self._start_dns(server)
        return server

    def add_service(
        self,
        cluster_ip: str,
        port: int,
        protocol: Protocol,
        backend_ip: str,
        backend_port: int | None = None,
        *,
        name: str = "",
    ) -> Service:
        """DNAT ``cluster_ip:port/protocol`` to ``backend_ip:backend_port`` on every node."""
        service = Service(cluster_ip, port, protocol, backend_ip, backend_port or port, name)
        self._register_service(service)
        try:
            self._apply_services_everywhere()
        except HarnessError:
            self.services.remove(service)
            raise
        return service

    def remove_service(self, service: Service) -> None:
        """Remove a Service port's DNAT from every node."""
        self.services.remove(service)
        self._apply_services_everywhere()

    # --- looking things up -----------------------------------------------------------

    def host_for(self, ip: str) -> Host:
        """The host whose namespace owns ``ip``."""
        if ip == ROUTER_IP or ip in self.outside.internet_hosts:
            return self.outside
        for host in [*self.nodes.values(), *self.pods.values()]:
            if host.ip == ip:
                return host
        raise HarnessError(f"no host of {self.prefix} has address {ip}")

    def dump(self) -> str:
        """Addresses, routes and nftables rules of every namespace, for failure reports."""
        sections = []
        for netns in self._namespaces:
            if not netns.exists():
                continue
            parts = [f"=== {netns.name}"]
            for argv in (["ip", "-br", "addr"], ["ip", "route"], ["nft", "list", "ruleset"]):
                result = netns.run(argv, check=False)
                parts.append(f"$ {' '.join(argv)}\n{result.stdout}{result.stderr}".rstrip())
            sections.append("\n".join(parts))
        return "\n".join(sections)

    # --- internals -------------------------------------------------------------------

    def _create_netns(self, name: str) -> Netns:
        if self._closed:
            raise HarnessError(f"{self.prefix} is closed")
        self.registry.add(name)
        netns = Netns.create(name)
        self._namespaces.append(netns)
        return netns

    def _check_name(self, name: str) -> None:
        if not _NAME_RE.fullmatch(name) or name == _OUTSIDE_SUFFIX:
            raise HarnessError(
                f"host name {name!r} must be 1-40 characters of a-z, 0-9 and '-', "
                f"and not {_OUTSIDE_SUFFIX!r}"
            )
        if name in self.nodes or name in self.pods:
            raise HarnessError(f"{self.prefix} already has a host named {name!r}")

    def _node(self, node: Node | str) -> Node:
        if isinstance(node, Node):
            return node
        try:
            return self.nodes[node]
        except KeyError:
            raise HarnessError(f"{self.prefix} has no node {node!r}") from None

    def _first_node(self) -> Node:
        if not self.nodes:
            raise HarnessError("add a node before starting the cluster DNS")
        return next(iter(self.nodes.values()))

    def _pod_address(self, node: Node, ip: str | None) -> str:
        used = {pod.ip for pod in self.pods.values()}
        if ip is not None:
            if not _ip_in(ip, [node.pod_cidr]) or ip in (
                str(node.pod_cidr.network_address),
                str(node.pod_cidr.broadcast_address),
            ):
                raise HarnessError(
                    f"pod address {ip} is not a host of {node.name}'s {node.pod_cidr}"
                )
            if ip in used:
                raise HarnessError(f"pod address {ip} is already taken")
            return ip
        for host in range(_FIRST_POD_HOST, 255):
            candidate = str(node.pod_cidr.network_address + host)
            if host != _DNS_POD_HOST and candidate not in used:
                return candidate
        raise HarnessError(f"{node.name}'s {node.pod_cidr} has no free pod address")

    def _register_service(self, service: Service) -> None:
        if not _ip_in(service.cluster_ip, [SERVICE_NETWORK]):
            raise HarnessError(f"ClusterIP {service.cluster_ip} is outside {SERVICE_NETWORK}")
        backend = service.backend_ip
        if not _ip_in(backend, [POD_NETWORK]) or _ip_in(backend, [SERVICE_NETWORK]):
            raise HarnessError(f"Service backend {backend} is not a pod address")
        if service.protocol not in ("tcp", "udp"):
            raise HarnessError(f"Service protocol must be 'tcp' or 'udp', not {service.protocol!r}")
        if service.name and not re.fullmatch(r"[A-Za-z0-9/._-]+", service.name):
            raise HarnessError(
                f"Service name {service.name!r} has characters nftables comments refuse"
            )
        if any(_service_key(s) == _service_key(service) for s in self.services):
            raise HarnessError(
                f"{service.cluster_ip}:{service.port}/{service.protocol} already has a backend"
            )
        self.services.append(service)

    def _apply_services_everywhere(self) -> None:
        for node in self.nodes.values():
            self._apply_services(node)

    def _apply_services(self, node: Node) -> None:
        rules = "\n".join(f"    {service.to_nft_rule()}" for service in self.services)
        chains = "\n".join(
            f"  chain {hook} {{\n"
            # -100 is "dstnat"; nft 1.0.6 accepts that name only at prerouting.
            f"    type nat hook {hook} priority -100; policy accept;\n"
            f"{rules}\n"
            "  }"
            for hook in ("prerouting", "output")
        )
        # "table; delete table; table {...}" replaces the table in one transaction
        # whether or not it existed before.
        node.netns.nft(
            f"table ip {KUBE_PROXY_TABLE}\n"
            f"delete table ip {KUBE_PROXY_TABLE}\n"
            f"table ip {KUBE_PROXY_TABLE} {{\n{chains}\n}}\n"
        )

    def _start_dns(self, server: DnsServer) -> None:
        self.dns_servers.append(server)
        server.start()

    def _spawn(
        self,
        host: Host,
        argv: Sequence[str],
        *,
        name: str | None,
        env: Mapping[str, str] | None,
        pipe_stdin: bool,
        pipe_stdout: bool,
    ) -> ManagedProcess:
        label = name or Path(argv[0]).name
        count = sum(1 for p in self._processes if p.name == label)
        log_path = self.workdir / "logs" / f"{host.name}-{label}-{count}.log"
        process = host.netns.spawn(
            argv,
            log_path=log_path,
            name=label,
            env=env,
            pipe_stdin=pipe_stdin,
            pipe_stdout=pipe_stdout,
        )
        self._processes.append(process)
        return process


def _service_key(service: Service) -> tuple[str, int, str]:
    return (service.cluster_ip, service.port, service.protocol)


@contextlib.contextmanager
def _collect(errors: list[str], what: str) -> Iterator[None]:
    """Record an error of one teardown step and carry on with the next."""
    try:
        yield
    except Exception as exc:
        errors.append(f"{what}: {exc}")


@dataclass
class Cluster:
    """The usual test cluster (see :func:`build_cluster`)."""

    topology: Topology
    nodes: list[Node]
    dns: DnsServer
    zone: DnsZone
    listeners: list[Listener]

    @property
    def dns_pod(self) -> Pod:
        """The pod that runs the cluster DNS server."""
        host = self.topology.host_for(self.dns.ip)
        if not isinstance(host, Pod):
            raise HarnessError(f"the cluster DNS address {self.dns.ip} is not a pod's")
        return host


def build_cluster(
    topology: Topology,
    *,
    nodes: Sequence[str] = ("node1", "node2"),
    zone: DnsZone | None = None,
    listen_ports: Sequence[int] = (80, 443),
) -> Cluster:
    """Nodes, the cluster DNS on the first node behind 10.244.250.10, and internet hosts.

    Every internet address the zone names gets a host with a TCP echo listener on each
    of ``listen_ports``.
    """
    zone = zone or default_test_zone()
    added = [topology.add_node(name) for name in nodes]
    dns = topology.start_dns_server(zone, node=added[0])
    internet = [ip for ip in dict.fromkeys(zone.addresses()) if _ip_in(ip, INTERNET_NETWORKS)]
    topology.add_internet_host(*internet)
    listeners = topology.outside.listen_all(
        [(ip, port) for ip in internet for port in listen_ports]
    )
    return Cluster(topology, added, dns, zone, listeners)
