"""A real Kubernetes control plane on loopback: etcd + kube-apiserver, envtest-style.

No kubelet, scheduler or controller-manager: objects are stored, validated, admitted
(webhooks included), watched and authorized by RBAC exactly as in a cluster, but
nothing runs them. The tests and ``acns demo`` use it::

    with ControlPlane(crd_paths=sorted(Path("crds").glob("*.yaml"))) as cp:
        cp.kubectl.apply(manifest, namespace="default")
        operator_kubeconfig = cp.service_account_access("acns-system", "acns-operator").kubeconfig

Boot sequence (:meth:`ControlPlane.start`), every step bounded by ``ready_timeout``:

1. certificates in memory (:mod:`acns_operator.local.certs`): a CA, the API server's
   serving certificate for ``IP:127.0.0.1``/``DNS:localhost``, the admin client
   certificate (``O=system:masters``) and the service-account signing key;
2. etcd on two free loopback ports, its data on tmpfs (``/dev/shm``) without fsync;
3. kube-apiserver on a free loopback port, RBAC on, until ``/readyz`` and namespace
   ``default`` answer; an admin kubeconfig written;
4. the given CRDs created and waited for until Established and served by discovery.

Binaries come from :class:`ControlPlaneBinaries` (``KUBEBUILDER_ASSETS`` and
``TEST_ASSET_*``, the envtest convention; ``make envtest`` provides them). Both
processes log to files under the work folder; every failure raises
:class:`~acns_operator.errors.HarnessError` with the tail of the relevant log.
:meth:`ControlPlane.stop` terminates, then kills, both processes by PID and removes
what it created, also when :meth:`start` failed half-way.

Run ``python -m acns_operator.local.controlplane`` for a cluster to poke at by hand.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from acns_operator import childproc
from acns_operator.errors import HarnessError
from acns_operator.local.certs import CertificateAuthority, new_signing_key
from acns_operator.local.kube import (
    ApiClient,
    ApiError,
    ClusterAccess,
    Kubectl,
    to_dns_label,
    unique_name,
    write_kubeconfig,
)

__all__ = [
    "DEFAULT_SERVICE_CLUSTER_IP_RANGE",
    "ControlPlane",
    "ControlPlaneBinaries",
    "ManagedProcess",
    "free_port",
    "main",
    "remove_stale_etcd_dirs",
]

LOOPBACK = "127.0.0.1"
# Inside the pod range the network tests use (10.244.0.0/16), on purpose: a ClusterIP
# given to a Service stays within the address plan of the namespaces the tests create,
# so the harness's kube-proxy stand-in never routes anything outside them.
DEFAULT_SERVICE_CLUSTER_IP_RANGE = "10.244.250.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
_POLL_INTERVAL = 0.05
_LOG_TAIL_LINES = 40

_MISSING_ASSETS_HINT = (
    "run the suite with `make test` (it builds or finds the binaries and sets "
    "KUBEBUILDER_ASSETS), or `export KUBEBUILDER_ASSETS=$(make -s envtest | tail -1)` "
    "before running pytest directly"
)


# --- binaries -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ControlPlaneBinaries:
    """Paths of the executables the control plane and its clients need."""

    kube_apiserver: Path
    etcd: Path
    kubectl: Path
    helm: Path | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ControlPlaneBinaries:
        """Find the binaries the way envtest does.

        Per binary: ``TEST_ASSET_KUBE_APISERVER`` / ``TEST_ASSET_ETCD`` /
        ``TEST_ASSET_KUBECTL`` / ``TEST_ASSET_HELM``, else the file of that name in
        ``KUBEBUILDER_ASSETS``; kubectl and helm may also come from ``PATH``. Raises
        :class:`HarnessError` naming what is missing and how to get it.
        """
        env = os.environ if environ is None else environ
        assets = env.get("KUBEBUILDER_ASSETS", "")
        problems: list[str] = []

        def find(name: str, variable: str, *, on_path: bool) -> Path | None:
            override = env.get(variable)
            candidates: list[tuple[str, Path]] = []
            if override:
                candidates.append((variable, Path(override)))
            elif assets:
                candidates.append(("KUBEBUILDER_ASSETS", Path(assets) / name))
            if not override and on_path:
                found = shutil.which(name, path=env.get("PATH"))
                if found:
                    candidates.append(("PATH", Path(found)))
            for _, path in candidates:
                if path.is_file() and os.access(path, os.X_OK):
                    return path
            where = ", ".join(f"{source}: {path}" for source, path in candidates)
            problems.append(f"{name} not found ({where or 'KUBEBUILDER_ASSETS is not set'})")
            return None

        apiserver = find("kube-apiserver", "TEST_ASSET_KUBE_APISERVER", on_path=False)
        etcd = find("etcd", "TEST_ASSET_ETCD", on_path=False)
        kubectl = find("kubectl", "TEST_ASSET_KUBECTL", on_path=True)
        helm_problems = len(problems)
        helm = find("helm", "TEST_ASSET_HELM", on_path=True)
        del problems[helm_problems:]  # helm is optional: only chart tests need it
        if apiserver is None or etcd is None or kubectl is None:
            raise HarnessError(
                "the control-plane binaries are missing: " + "; ".join(problems) + ". "
                "To fix: " + _MISSING_ASSETS_HINT
            )
        return cls(kube_apiserver=apiserver, etcd=etcd, kubectl=kubectl, helm=helm)


# --- processes ----------------------------------------------------------------------------


def free_port() -> int:
    """Ask the kernel for a free TCP port on 127.0.0.1.

    Another process may take it before ours binds (other sessions share the machine):
    :class:`ControlPlane` retries a start that fails with ``address already in use``.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGTERM it when its parent dies.

    If the test process is killed hard (CI timeout, a second Ctrl-C) no ``finally``
    runs; without this, etcd and kube-apiserver would outlive it on a shared machine.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _child_environment() -> dict[str, str]:
    env = dict(os.environ)
    for key in list(env):
        # etcd maps every ETCD_<FLAG> variable onto its flags and refuses to start when
        # one conflicts with a command-line flag.
        if key.startswith("ETCD_"):
            del env[key]
    # Loopback must never go through an HTTP proxy (Go already skips it; be explicit).
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), LOOPBACK, "localhost"]))
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    return env


_ETCD_DIR_PREFIX = "acns-etcd-"
_OWNER_FILE = "owner.pid"
# A folder younger than this may be one another session is still setting up.
_STALE_AFTER_SECONDS = 60.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def remove_stale_etcd_dirs(base: Path, *, now: float | None = None) -> list[Path]:
    """Remove etcd data folders under ``base`` left by sessions that died without cleanup.

    A test process killed hard runs no ``finally``: its children die with it
    (``PR_SET_PDEATHSIG``) but their data stays in tmpfs, i.e. in memory. A folder is
    stale when the PID in its ``owner.pid`` is gone; folders without one (or younger
    than a minute, possibly being set up) are left alone, so concurrent sessions on
    the same machine are safe. Returns what was removed.
    """
    now = time.time() if now is None else now
    removed: list[Path] = []
    for folder in base.glob(f"{_ETCD_DIR_PREFIX}*"):
        try:
            if now - folder.stat().st_mtime < _STALE_AFTER_SECONDS:
                continue
            owner = int((folder / _OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if not _pid_alive(owner):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class ManagedProcess:
    """A child process whose output goes to a log file, stopped by its PID."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        """Describe the process; nothing runs until :meth:`start`."""
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The PID once started."""
        return self._process.pid if self._process else None

    def start(self) -> None:
        """Start the process in its own session (a terminal's Ctrl-C goes to us only)."""
        try:
            # One prctl() call between fork and exec: safe even with threads.
            self._process = childproc.start_logged(
                self.argv, self.log_path, env=_child_environment(), preexec_fn=_die_with_parent
            )
        except OSError as exc:
            raise HarnessError(f"could not start {self.name} ({self.argv[0]}): {exc}") from exc

    def exit_code(self) -> int | None:
        """The exit status if the process has ended, else None."""
        return self._process.poll() if self._process else None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the log, for error messages."""
        return childproc.log_tail(self.log_path, lines)

    def describe_failure(self, what: str) -> str:
        """A message saying ``what`` failed, the exit status, log path and log tail."""
        code = self.exit_code()
        state = "still running" if code is None else f"exited with status {code}"
        return (
            f"{what}: {self.name} (pid {self.pid}) {state}; log {self.log_path}, last lines:\n"
            f"{self.log_tail()}"
        )

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Safe to call twice."""
        if self._process is not None:
            childproc.terminate(self._process, grace)


# --- control plane ------------------------------------------------------------------------


def _wait_for(
    what: str,
    check: Callable[[], bool],
    *,
    timeout: float,
    processes: Sequence[ManagedProcess] = (),
    details: Callable[[], str] = lambda: "",
) -> None:
    """Poll ``check`` until it returns True; fail fast if a watched process exits."""
    deadline = time.monotonic() + timeout
    while True:
        for process in processes:
            if process.exit_code() is not None:
                raise _ProcessExitedError(process, process.describe_failure(f"waiting for {what}"))
        if check():
            return
        if time.monotonic() > deadline:
            message = f"timed out after {timeout:.0f} s waiting for {what}"
            extra = details()
            if extra:
                message += f"\n{extra}"
            for process in processes:
                message += "\n" + process.describe_failure("log")
            raise HarnessError(message)
        time.sleep(_POLL_INTERVAL)


class _ProcessExitedError(HarnessError):
    """A control-plane process exited while it was being waited for."""

    def __init__(self, process: ManagedProcess, message: str) -> None:
        super().__init__(message)
        self.process = process

    @property
    def port_in_use(self) -> bool:
        return "address already in use" in self.process.log_tail(200)


class ControlPlane(childproc.Supervised):
    """etcd + kube-apiserver on loopback, with an admin identity and minted users.

    Use as a context manager, or call :meth:`start` and :meth:`stop` (in a ``finally``).
    """

    def __init__(
        self,
        binaries: ControlPlaneBinaries | None = None,
        *,
        crd_paths: Sequence[Path] = (),
        work_dir: Path | None = None,
        service_cluster_ip_range: str = DEFAULT_SERVICE_CLUSTER_IP_RANGE,
        ready_timeout: float = 60.0,
        extra_apiserver_args: Sequence[str] = (),
    ) -> None:
        """Configure the control plane; nothing starts until :meth:`start`.

        ``binaries`` default to :meth:`ControlPlaneBinaries.from_environment`.
        ``work_dir`` receives certificates, kubeconfigs and process logs; when given it
        is kept after :meth:`stop` (pytest's ``tmp_path_factory`` keeps the last runs'
        logs), otherwise a temporary folder is made and removed.
        """
        self.binaries = binaries or ControlPlaneBinaries.from_environment()
        self.crd_paths = list(crd_paths)
        self.service_cluster_ip_range = service_cluster_ip_range
        self.ready_timeout = ready_timeout
        self.extra_apiserver_args = list(extra_apiserver_args)
        self._given_work_dir = work_dir
        self._work_dir: Path | None = None
        self._etcd_data_dir: Path | None = None
        self._etcd: ManagedProcess | None = None
        self._apiserver: ManagedProcess | None = None
        self._ca: CertificateAuthority | None = None
        self._admin: ClusterAccess | None = None
        self._lock = threading.Lock()
        self.timings: dict[str, float] = {}
        self.boot_seconds: float | None = None
        self.crd_names: list[str] = []

    # -- lifecycle --

    def start(self) -> None:
        """Boot etcd and kube-apiserver, write the admin kubeconfig, install the CRDs.

        Cleans up after itself if any step fails, then raises :class:`HarnessError`.
        """
        if self._apiserver is not None:
            raise HarnessError("this control plane was already started")
        began = time.monotonic()
        try:
            self._prepare_work_dir()
            step = time.monotonic()
            pki = self._make_certificates()
            self.timings["certificates"] = time.monotonic() - step
            step = time.monotonic()
            etcd_url = self._start_etcd()
            self.timings["etcd"] = time.monotonic() - step
            step = time.monotonic()
            self._start_apiserver(etcd_url, pki)
            self.timings["kube-apiserver"] = time.monotonic() - step
            step = time.monotonic()
            self.crd_names = self.install_crds(self.crd_paths)
            self.timings["crds"] = time.monotonic() - step
        except BaseException:
            self.stop()
            raise
        self.boot_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop both processes by PID and remove what was created. Idempotent."""
        with self._lock:
            # The API server first, so it does not log etcd connection errors on the way.
            for process in (self._apiserver, self._etcd):
                if process is not None:
                    process.stop()
            if self._etcd_data_dir is not None:
                shutil.rmtree(self._etcd_data_dir, ignore_errors=True)
                self._etcd_data_dir = None
            if self._work_dir is not None and self._given_work_dir is None:
                shutil.rmtree(self._work_dir, ignore_errors=True)

    # -- what callers use --

    @property
    def work_dir(self) -> Path:
        """Certificates, kubeconfigs and logs live here."""
        if self._work_dir is None:
            raise HarnessError("the control plane is not started")
        return self._work_dir

    @property
    def admin(self) -> ClusterAccess:
        """The cluster-admin identity (``O=system:masters``)."""
        if self._admin is None:
            raise HarnessError("the control plane is not started")
        return self._admin

    @property
    def server(self) -> str:
        """The API server URL, ``https://127.0.0.1:<port>``."""
        return self.admin.server

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (self-contained: certificates embedded)."""
        return self.admin.kubeconfig

    @property
    def ca_cert_pem(self) -> bytes:
        """The cluster CA certificate, e.g. to check a webhook's ``caBundle`` chain."""
        return self._require_ca().cert_pem

    @property
    def certificate_authority(self) -> CertificateAuthority:
        """The cluster CA, to issue more certificates (e.g. a webhook's serving one)."""
        return self._require_ca()

    @property
    def api(self) -> ApiClient:
        """An HTTPS client authenticated as the admin."""
        return ApiClient(self.admin)

    @property
    def kubectl(self) -> Kubectl:
        """kubectl bound to the admin kubeconfig."""
        return Kubectl(self.binaries.kubectl, self.kubeconfig, cache_dir=self.work_dir / "kubectl")

    @property
    def pids(self) -> dict[str, int]:
        """The PID of each process started so far, by name (running or not)."""
        return {p.name: p.pid for p in (self._etcd, self._apiserver) if p is not None and p.pid}

    @property
    def etcd_data_dir(self) -> Path | None:
        """etcd's data folder (on tmpfs when available); None before start and after stop."""
        return self._etcd_data_dir

    @property
    def log_files(self) -> dict[str, Path]:
        """The log file of each process, by name."""
        return {p.name: p.log_path for p in (self._etcd, self._apiserver) if p is not None}

    def mint_access(self, user: str, groups: Sequence[str] = ()) -> ClusterAccess:
        """Issue a client certificate for ``user`` in ``groups`` and write its kubeconfig.

        The API server authenticates it as that user; what it may do is whatever RBAC
        grants that user or groups (nothing, until a binding says so).
        """
        ca = self._require_ca()
        folder = self.work_dir / "users" / unique_name(to_dns_label(user, max_length=40))
        cert_file, key_file = ca.issue_client(user, groups).write(folder, "client")
        certificate = cert_file.read_bytes()
        kubeconfig = write_kubeconfig(
            folder / "kubeconfig",
            server=self.server,
            ca_pem=ca.cert_pem,
            cert_pem=certificate,
            key_pem=key_file.read_bytes(),
            user=user,
        )
        return ClusterAccess(
            server=self.server,
            user=user,
            ca_file=self.admin.ca_file,
            cert_file=cert_file,
            key_file=key_file,
            kubeconfig=kubeconfig,
        )

    def mint_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        """Like :meth:`mint_access`, returning only the kubeconfig path."""
        return self.mint_access(user, groups).kubeconfig

    def service_account_access(self, namespace: str, name: str) -> ClusterAccess:
        """An identity that RBAC treats exactly as ServiceAccount ``namespace/name``.

        A ServiceAccount authenticates as user ``system:serviceaccount:<ns>:<name>`` in
        groups ``system:serviceaccounts`` and ``system:serviceaccounts:<ns>``; a client
        certificate with those names matches the same RoleBindings (subject
        ``kind: ServiceAccount``), without token controllers. The ServiceAccount object
        itself need not exist.
        """
        return self.mint_access(
            f"system:serviceaccount:{namespace}:{name}",
            ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
        )

    def install_crds(self, paths: Sequence[Path]) -> list[str]:
        """Create every CustomResourceDefinition in ``paths`` and wait until it is served.

        Served means Established, names accepted, and every served version listing the
        resource in discovery (what kubectl needs before ``apply``). Returns the CRD names.
        """
        crds: list[dict[str, Any]] = []
        for path in paths:
            try:
                documents = _load_documents(path.read_text())
            except (OSError, yaml.YAMLError) as exc:
                raise HarnessError(f"could not read CRDs from {path}: {exc}") from exc
            crds += [d for d in documents if d and d.get("kind") == "CustomResourceDefinition"]
        api = self.api
        collection = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        for crd in crds:
            try:
                api.create(collection, crd)
            except ApiError as exc:
                if exc.reason != "AlreadyExists":
                    raise HarnessError(
                        f"could not create CRD {crd['metadata']['name']}: {exc}"
                    ) from exc
                api.replace(
                    f"{collection}/{crd['metadata']['name']}", _with_version(api, collection, crd)
                )
        for crd in crds:
            self._wait_crd_served(api, crd)
        return [crd["metadata"]["name"] for crd in crds]

    # -- boot steps --

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver only, keeping etcd and every stored object.

        For outage tests: clients see connection errors until
        :meth:`start_apiserver` brings it back on the same address.
        """
        if self._apiserver is None:
            raise HarnessError("kube-apiserver is not running: start() the control plane first")
        self._apiserver.stop()

    def start_apiserver(self) -> None:
        """Start kube-apiserver again after :meth:`stop_apiserver`, on the same port.

        Returns when ``/readyz`` answers; clients keep their kubeconfig.
        """
        if self._apiserver is None:
            raise HarnessError("kube-apiserver was never started: start() the control plane")
        if self._apiserver.exit_code() is None:
            return  # still running: nothing to do
        self._apiserver.start()
        _wait_for(
            "kube-apiserver /readyz after a restart",
            functools.partial(_api_ok, self.api, "/readyz"),
            timeout=self.ready_timeout,
            processes=[self._apiserver],
            details=functools.partial(_readyz_details, self.api),
        )

    def _require_ca(self) -> CertificateAuthority:
        if self._ca is None:
            raise HarnessError("the control plane is not started")
        return self._ca

    def _prepare_work_dir(self) -> None:
        if self._given_work_dir is not None:
            self._given_work_dir.mkdir(parents=True, exist_ok=True)
            self._work_dir = self._given_work_dir
        else:
            self._work_dir = Path(tempfile.mkdtemp(prefix="acns-controlplane-"))
        shm = Path("/dev/shm")  # noqa: S108 -- tmpfs on purpose: etcd's writes stay in memory
        if shm.is_dir() and os.access(shm, os.W_OK):
            remove_stale_etcd_dirs(shm)
            base = shm
        else:
            base = self._work_dir
        self._etcd_data_dir = Path(tempfile.mkdtemp(prefix=_ETCD_DIR_PREFIX, dir=base))
        (self._etcd_data_dir / _OWNER_FILE).write_text(str(os.getpid()))

    def _make_certificates(self) -> dict[str, Path]:
        pki = self.work_dir / "pki"
        ca = CertificateAuthority.create("acns-local-ca")
        self._ca = ca
        ca_file, _ = ca.certificate.write(pki, "ca")
        serving_cert, serving_key = ca.issue_server(
            "kube-apiserver", ip_addresses=[LOOPBACK], dns_names=["localhost"]
        ).write(pki, "apiserver")
        admin_cert, admin_key = ca.issue_client("acns-admin", ["system:masters"]).write(
            pki, "admin"
        )
        signing = new_signing_key()
        sa_key = pki / "service-account.key"
        sa_pub = pki / "service-account.pub"
        sa_key.touch(mode=0o600)
        sa_key.write_bytes(signing.private_pem)
        sa_pub.write_bytes(signing.public_pem)
        return {
            "ca": ca_file,
            "serving_cert": serving_cert,
            "serving_key": serving_key,
            "admin_cert": admin_cert,
            "admin_key": admin_key,
            "sa_key": sa_key,
            "sa_pub": sa_pub,
        }

    def _start_etcd(self, attempts: int = 3) -> str:
        assert self._etcd_data_dir is not None
        for attempt in range(1, attempts + 1):
            client_port, peer_port = free_port(), free_port()
            client_url = f"http://{LOOPBACK}:{client_port}"
            peer_url = f"http://{LOOPBACK}:{peer_port}"
            self._etcd = ManagedProcess(
                "etcd",
                [
                    str(self.binaries.etcd),
                    "--name=acns",
                    f"--data-dir={self._etcd_data_dir / f'data-{attempt}'}",
                    f"--listen-client-urls={client_url}",
                    f"--advertise-client-urls={client_url}",
                    f"--listen-peer-urls={peer_url}",
                    f"--initial-advertise-peer-urls={peer_url}",
                    f"--initial-cluster=acns={peer_url}",
                    "--initial-cluster-state=new",
                    # Throwaway data on tmpfs: durability buys nothing, fsync costs time.
                    "--unsafe-no-fsync",
                    # A single member elects itself after one election timeout; the
                    # default (1 s) would be a third of the whole boot.
                    "--election-timeout=100",
                    "--heartbeat-interval=10",
                    "--log-level=warn",
                ],
                self.work_dir / "logs" / "etcd.log",
            )
            self._etcd.start()
            try:
                _wait_for(
                    f"etcd health on {client_url}",
                    functools.partial(_etcd_healthy, client_url),
                    timeout=self.ready_timeout,
                    processes=[self._etcd],
                )
            except _ProcessExitedError as exc:
                if exc.port_in_use and attempt < attempts:
                    continue  # another process took the port between probe and bind
                raise
            return client_url
        raise HarnessError("unreachable: etcd start attempts exhausted")  # pragma: no cover

    def _start_apiserver(self, etcd_url: str, pki: dict[str, Path], attempts: int = 3) -> None:
        for attempt in range(1, attempts + 1):
            port = free_port()
            server = f"https://{LOOPBACK}:{port}"
            self._apiserver = ManagedProcess(
                "kube-apiserver",
                [
                    str(self.binaries.kube_apiserver),
                    f"--advertise-address={LOOPBACK}",
                    f"--bind-address={LOOPBACK}",
                    f"--secure-port={port}",
                    f"--etcd-servers={etcd_url}",
                    f"--cert-dir={self.work_dir / 'pki'}",
                    f"--tls-cert-file={pki['serving_cert']}",
                    f"--tls-private-key-file={pki['serving_key']}",
                    f"--client-ca-file={pki['ca']}",
                    f"--service-cluster-ip-range={self.service_cluster_ip_range}",
                    f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                    f"--service-account-key-file={pki['sa_pub']}",
                    f"--service-account-signing-key-file={pki['sa_key']}",
                    "--authorization-mode=RBAC",
                    # No controllers create ServiceAccounts; pods must not require one.
                    "--disable-admission-plugins=ServiceAccount",
                    "--allow-privileged=true",
                    # The endpoint reconciler would publish 127.0.0.1 for the `kubernetes`
                    # Service, which Endpoints validation rejects (loopback), every 10 s.
                    "--endpoint-reconciler-type=none",
                    "--profiling=false",
                    *self.extra_apiserver_args,
                ],
                self.work_dir / "logs" / "kube-apiserver.log",
            )
            self._admin = ClusterAccess(
                server=server,
                user="acns-admin",
                ca_file=pki["ca"],
                cert_file=pki["admin_cert"],
                key_file=pki["admin_key"],
                kubeconfig=self.work_dir / "admin.kubeconfig",
            )
            self._apiserver.start()
            api = ApiClient(self._admin, timeout=5.0)
            try:
                _wait_for(
                    f"kube-apiserver /readyz on {server}",
                    functools.partial(_api_ok, api, "/readyz"),
                    timeout=self.ready_timeout,
                    processes=[self._apiserver, self._etcd] if self._etcd else [self._apiserver],
                    details=functools.partial(_readyz_details, api),
                )
            except _ProcessExitedError as exc:
                if exc.process is self._apiserver and exc.port_in_use and attempt < attempts:
                    continue
                raise
            _wait_for(
                "namespace default",
                functools.partial(_api_ok, api, "/api/v1/namespaces/default"),
                timeout=self.ready_timeout,
                processes=[self._apiserver],
            )
            write_kubeconfig(
                self._admin.kubeconfig,
                server=server,
                ca_pem=self._require_ca().cert_pem,
                cert_pem=pki["admin_cert"].read_bytes(),
                key_pem=pki["admin_key"].read_bytes(),
                user="acns-admin",
            )
            return
        raise HarnessError(
            "unreachable: kube-apiserver start attempts exhausted"
        )  # pragma: no cover

    def _wait_crd_served(self, api: ApiClient, crd: Mapping[str, Any]) -> None:
        name = crd["metadata"]["name"]
        group = crd["spec"]["group"]
        plural = crd["spec"]["names"]["plural"]
        versions = [v["name"] for v in crd["spec"]["versions"] if v.get("served", True)]
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"

        def established() -> bool:
            # A new CRD's status may be absent or carry `conditions: null` at first.
            conditions = (api.get(path).get("status") or {}).get("conditions") or []
            true = {c["type"] for c in conditions if c.get("status") == "True"}
            return {"Established", "NamesAccepted"} <= true

        def in_discovery() -> bool:
            for version in versions:
                response = api.request("GET", f"/apis/{group}/{version}")
                if not response.ok or not isinstance(response.body, dict):
                    return False
                if plural not in {r["name"] for r in response.body.get("resources", [])}:
                    return False
            return True

        processes = [self._apiserver] if self._apiserver else []
        _wait_for(
            f"CRD {name} to be established",
            established,
            timeout=self.ready_timeout,
            processes=processes,
            details=lambda: f"CRD status: {api.get(path).get('status')}",
        )
        _wait_for(
            f"CRD {name} to be served in discovery ({', '.join(versions)})",
            in_discovery,
            timeout=self.ready_timeout,
            processes=processes,
        )


def _load_documents(text: str) -> list[Any]:
    """Every YAML document in ``text``, parsed safely.

    libyaml's parser when PyYAML has it: the project's CRDs are ~200 kB each, which the
    pure-Python parser takes half a second to read, a sixth of the whole boot.
    """
    if yaml.__with_libyaml__:
        return list(yaml.load_all(text, Loader=yaml.CSafeLoader))
    return list(yaml.safe_load_all(text))  # pragma: no cover - wheels ship libyaml


def _with_version(api: ApiClient, collection: str, crd: Mapping[str, Any]) -> dict[str, Any]:
    """``crd`` with the stored object's resourceVersion, as a PUT requires."""
    current = api.get(f"{collection}/{crd['metadata']['name']}")
    updated = dict(crd)
    updated["metadata"] = {
        **crd["metadata"],
        "resourceVersion": current["metadata"]["resourceVersion"],
    }
    return updated


def _etcd_healthy(client_url: str) -> bool:
    # A proxy-free opener: an HTTP(S)_PROXY in the environment must not see loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{client_url}/health", timeout=2) as response:
            return b'"health":"true"' in response.read()
    except (OSError, urllib.error.URLError):
        return False


def _api_ok(api: ApiClient, path: str) -> bool:
    try:
        return api.request("GET", path).ok
    except HarnessError:
        return False  # not listening yet


def _readyz_details(api: ApiClient) -> str:
    try:
        response = api.request("GET", "/readyz", query={"verbose": "1"})
    except HarnessError as exc:
        return f"/readyz unreachable: {exc}"
    failing = [line for line in str(response.body).splitlines() if "failed" in line]
    return "failing readiness checks: " + ("; ".join(failing) or str(response.body)[-500:])


# --- command line -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Boot a control plane, print how to use it, and run until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m acns_operator.local.controlplane",
        description="Run etcd + kube-apiserver on loopback until Ctrl-C.",
    )
    parser.add_argument(
        "--crds", type=Path, default=Path("crds"), help="folder of CRD YAML files to install"
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="keep certificates, kubeconfig and logs here"
    )
    args = parser.parse_args(argv)
    crd_paths = sorted(args.crds.glob("*.yaml")) if args.crds.is_dir() else []
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        with ControlPlane(crd_paths=crd_paths, work_dir=args.work_dir) as cp:
            print(f"control plane ready in {cp.boot_seconds:.1f} s ({_format_timings(cp)})")
            print(f"server: {cp.server}; CRDs: {', '.join(cp.crd_names) or 'none'}")
            print(f"export KUBECONFIG={cp.kubeconfig}")
            print("Ctrl-C to stop.", flush=True)
            stop.wait()
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _format_timings(cp: ControlPlane) -> str:
    return ", ".join(f"{step} {seconds:.1f} s" for step, seconds in cp.timings.items())


if __name__ == "__main__":
    sys.exit(main())
