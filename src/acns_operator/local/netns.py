"""Network namespaces and the processes that run in them: the harness's lowest layer.

A :class:`Netns` is one named network namespace (``/run/netns/NAME``, what
``ip netns add`` makes). It runs commands inside itself (``nsenter --net``, which is
lighter than ``ip netns exec`` because it does not remount ``/sys``), starts
long-running processes that are stopped by PID (:class:`ManagedProcess`), opens sockets
that belong to it (a helper thread enters the namespace with ``setns(2)`` just long
enough to create the socket; the socket then stays in that namespace wherever it is
used), and writes its sysctls the same way, so most set-up needs no extra process.

Every namespace a run creates is written to a registry file
(``/run/acns-netns/<run id>.json``) together with the owning process's PID and start
time. :func:`cleanup_stale_runs` removes the namespaces (and the processes inside them)
of runs whose owner has died, for example after ``kill -9`` of a test session; it never
touches a namespace that is not in a dead run's record, so engineers who run tests at
the same time on one machine do not tear down each other's hosts.

Nothing here routes anywhere: a fresh namespace has only a loopback interface.
:mod:`acns_operator.local.topology` builds the links, addresses and routes.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

from acns_operator.errors import HarnessError

__all__ = [
    "NETNS_RUN_DIR",
    "REGISTRY_DIR",
    "REQUIRED_TOOLS",
    "ManagedProcess",
    "Netns",
    "RunRegistry",
    "check_prerequisites",
    "cleanup_stale_runs",
    "require_prerequisites",
    "run_command",
]

T = TypeVar("T")

NETNS_RUN_DIR = Path("/run/netns")
"""Where ``ip netns`` keeps the bind mounts that name network namespaces."""

REGISTRY_DIR = Path("/run/acns-netns")
"""Where each harness run records the namespaces it created (tmpfs: gone at reboot)."""

REQUIRED_TOOLS: Mapping[str, str] = {
    "ip": "iproute2",
    "nsenter": "util-linux",
    "nft": "nftables",
    "dnsmasq": "dnsmasq-base",
    "dig": "bind9-dnsutils",
}
"""Programs the network harness runs, and the Debian package that provides each."""

_CLONE_NEWNET = 0x40000000
_STOP_GRACE_SECONDS = 3.0
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_prerequisites(tools: Mapping[str, str] = REQUIRED_TOOLS) -> list[str]:
    """Return what is missing for the network harness, one sentence each (empty: all set)."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append(
            "the network-namespace tests need root (ip netns add, veth pairs, nftables); "
            "run them as root, as CI does"
        )
    missing = {tool: package for tool, package in tools.items() if shutil.which(tool) is None}
    if missing:
        tools_text = ", ".join(f"`{tool}` (Debian package {pkg})" for tool, pkg in missing.items())
        problems.append(f"missing programs: {tools_text}; install them with `make deps` as root")
    return problems


def require_prerequisites(tools: Mapping[str, str] = REQUIRED_TOOLS) -> None:
    """Raise :class:`HarnessError` saying what to install when the harness cannot run."""
    problems = check_prerequisites(tools)
    if problems:
        raise HarnessError("network harness prerequisites missing: " + "; ".join(problems))


def run_command(
    argv: Sequence[str],
    *,
    timeout: float = 10.0,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv``, capture its text output, and turn failures into :class:`HarnessError`.

    With ``check`` a non-zero exit raises; a timeout always raises (the child is killed
    by :func:`subprocess.run`). The message names the command and carries its stderr.
    """
    command = shlex.join(argv)
    try:
        result = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(
            f"`{command}` did not finish within {timeout:g} s; stderr: {_text(exc.stderr)!r}"
        ) from exc
    except OSError as exc:
        raise HarnessError(f"`{command}` could not be started: {exc}") from exc
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise HarnessError(f"`{command}` failed with exit code {result.returncode}: {detail}")
    return result


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


class Netns:
    """One named network namespace and the operations the harness performs inside it."""

    def __init__(self, name: str) -> None:
        """Refer to the namespace ``name`` (it need not exist yet; see :meth:`create`)."""
        if not _NAME_RE.fullmatch(name):
            raise HarnessError(f"invalid network namespace name {name!r}")
        self.name = name
        self.path = NETNS_RUN_DIR / name

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    @classmethod
    def create(cls, name: str) -> Netns:
        """Create the namespace, bring its loopback up and turn IPv6 off in it.

        The test cluster is IPv4-only (the AKS profile refuses dual stack); turning IPv6
        off before any interface exists keeps router solicitations and DAD out of
        packet captures and conntrack tables.
        """
        netns = cls(name)
        run_command(["ip", "netns", "add", name])
        try:
            netns.set_sysctls(
                {
                    "net.ipv6.conf.all.disable_ipv6": "1",
                    "net.ipv6.conf.default.disable_ipv6": "1",
                }
            )
            netns.ip("link set lo up")
        except BaseException:
            netns.delete()
            raise
        return netns

    def exists(self) -> bool:
        """Whether ``/run/netns/NAME`` is present."""
        return self.path.exists()

    def delete(self) -> None:
        """Remove the name; the kernel frees the namespace once no process or socket uses it.

        Deleting a namespace destroys the veth ends inside it, and with them their peers.
        """
        if self.exists():
            run_command(["ip", "netns", "delete", self.name])

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped so that it runs inside this namespace."""
        return ["nsenter", f"--net={self.path}", "--", *argv]

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 10.0,
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the namespace and return its result (see :func:`run_command`)."""
        return run_command(self.command(argv), timeout=timeout, check=check, input=input)

    def ip(self, *commands: str) -> None:
        """Run ``ip`` commands in the namespace as one batch (one process for all of them).

        Each command is what follows ``ip`` on a command line, e.g. ``"link set lo up"``.
        """
        script = "".join(f"{line}\n" for line in commands)
        run_command(["ip", "-n", self.name, "-batch", "-"], input=script)

    def nft(self, script: str) -> None:
        """Apply an nftables script in the namespace as one atomic transaction."""
        self.run(["nft", "-f", "-"], input=script)

    def call_inside(self, function: Callable[[], T]) -> T:
        """Call ``function`` on a helper thread that has entered this namespace.

        ``setns(2)`` changes only the calling thread, so the caller's own namespace never
        changes; sockets created by ``function`` stay in this namespace after it returns.
        """
        outcome: dict[str, object] = {}

        def enter_and_call() -> None:
            try:
                _setns(self.path)
                outcome["value"] = function()
            except BaseException as exc:  # re-raised on the caller's thread below
                outcome["error"] = exc

        thread = threading.Thread(target=enter_and_call, name=f"netns-{self.name}", daemon=True)
        thread.start()
        thread.join()
        if "error" in outcome:
            error = outcome["error"]
            assert isinstance(error, BaseException)
            raise error
        return outcome["value"]  # type: ignore[return-value]  # set by the thread above

    def socket(
        self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0
    ) -> socket.socket:
        """A new socket that lives in this namespace (the caller must close it)."""
        return self.call_inside(lambda: socket.socket(family, type, proto))

    def set_sysctls(self, values: Mapping[str, str]) -> None:
        """Write ``net.*`` sysctls of this namespace (``/proc/sys/net`` is per namespace)."""

        def write_all() -> None:
            for key, value in values.items():
                path = Path("/proc/sys") / key.replace(".", "/")
                try:
                    path.write_text(f"{value}\n")
                except OSError as exc:
                    raise HarnessError(
                        f"setting sysctl {key}={value} in network namespace {self.name} "
                        f"failed: {exc}"
                    ) from exc

        self.call_inside(write_all)

    def pids(self) -> list[int]:
        """PIDs of every process whose network namespace is this one."""
        if not self.exists():
            return []
        result = run_command(["ip", "netns", "pids", self.name], check=False)
        return [int(token) for token in result.stdout.split() if token.isdigit()]

    def spawn(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        pipe_stdin: bool = False,
        pipe_stdout: bool = False,
    ) -> ManagedProcess:
        """Start ``argv`` inside the namespace in its own session, output to ``log_path``.

        ``nsenter`` execs the program, so the PID returned is the program's own.
        stderr (and stdout unless piped) goes to ``log_path`` so failures can quote it.
        """
        log_path.parent.mkdir(parents=True, exist_ok=True)
        full_argv = self.command(argv)
        with log_path.open("ab") as log:
            try:
                popen = subprocess.Popen(
                    full_argv,
                    stdin=subprocess.PIPE if pipe_stdin else subprocess.DEVNULL,
                    stdout=subprocess.PIPE if pipe_stdout else log,
                    stderr=log,
                    env=dict(env) if env is not None else None,
                    start_new_session=True,
                )
            except OSError as exc:
                raise HarnessError(
                    f"`{shlex.join(full_argv)}` could not be started: {exc}"
                ) from exc
        return ManagedProcess(
            name=name or Path(argv[0]).name,
            argv=tuple(argv),
            netns=self,
            popen=popen,
            log_path=log_path,
        )


_libc: ctypes.CDLL | None = None


def _setns(path: Path) -> None:
    """Move the calling thread into the network namespace named by ``path``."""
    global _libc  # loaded once, on first use, so importing this module stays cheap
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
        _libc.setns.restype = ctypes.c_int
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise HarnessError(f"opening network namespace {path} failed: {exc}") from exc
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise HarnessError(f"setns({path}) failed: {os.strerror(errno)}")
    finally:
        os.close(fd)


@dataclass(eq=False)
class ManagedProcess:
    """A long-running process the harness started inside a namespace; stopped by PID."""

    name: str
    argv: tuple[str, ...]
    netns: Netns
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """The process ID (the program itself: ``nsenter`` execs it)."""
        return self.popen.pid

    @property
    def stdin(self) -> IO[bytes]:
        """The process's stdin pipe (only when spawned with ``pipe_stdin``)."""
        if self.popen.stdin is None:
            raise HarnessError(f"{self.name} (pid {self.pid}) was started without a stdin pipe")
        return self.popen.stdin

    @property
    def stdout(self) -> IO[bytes]:
        """The process's stdout pipe (only when spawned with ``pipe_stdout``)."""
        if self.popen.stdout is None:
            raise HarnessError(f"{self.name} (pid {self.pid}) was started without a stdout pipe")
        return self.popen.stdout

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit and return its exit code."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(
                f"{self.name} (pid {self.pid}) still running after {timeout:g} s"
            ) from exc

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process (by PID) if it is still running."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self) -> int:
        """``kill -9`` the process and reap it; returns the exit code (``-9``)."""
        self.signal(signal.SIGKILL)
        code = self.wait(_STOP_GRACE_SECONDS)
        self._close_pipes()
        return code

    def stop(self, grace: float = _STOP_GRACE_SECONDS) -> int:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; reap and close pipes."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
        code = self.wait(_STOP_GRACE_SECONDS)
        self._close_pipes()
        return code

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the process's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _close_pipes(self) -> None:
        for pipe in (self.popen.stdin, self.popen.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def process_start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (None when it does not exist).

    Together with the PID it identifies a process even after PID reuse.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


@dataclass
class RunRegistry:
    """The record of one harness run: who owns it and which namespaces it created."""

    run_id: str
    directory: Path = REGISTRY_DIR
    namespaces: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        """The run's record file."""
        return self.directory / f"{self.run_id}.json"

    def add(self, namespace: str) -> None:
        """Record ``namespace`` *before* it is created, so a crash never leaves it unrecorded."""
        self.namespaces.append(namespace)
        self._write()

    def remove(self) -> None:
        """Delete the record (after every namespace in it is gone)."""
        self.path.unlink(missing_ok=True)

    def _write(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        record = {
            "run_id": self.run_id,
            "owner_pid": os.getpid(),
            "owner_start_ticks": process_start_ticks(os.getpid()),
            "namespaces": self.namespaces,
        }
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(record, indent=2))
        temporary.replace(self.path)


def _owner_alive(record: Mapping[str, object]) -> bool:
    pid = record.get("owner_pid")
    if not isinstance(pid, int):
        return False
    ticks = process_start_ticks(pid)
    return ticks is not None and ticks == record.get("owner_start_ticks")


def cleanup_stale_runs(directory: Path = REGISTRY_DIR) -> list[str]:
    """Remove the namespaces of harness runs whose owning process has died.

    For each dead run: every process still inside one of its namespaces is killed (by
    PID, from ``ip netns pids``), the namespaces are deleted, and the record is removed.
    Runs whose owner is alive are left alone. Returns the namespaces removed.
    """
    removed: list[str] = []
    if not directory.is_dir():
        return removed
    for path in sorted(directory.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if _owner_alive(record):
            continue
        names = [name for name in record.get("namespaces", []) if isinstance(name, str)]
        for name in reversed(names):  # pods before nodes before the outside namespace
            netns = Netns(name)
            kill_processes_in(netns)
            if netns.exists():
                netns.delete()
                removed.append(name)
        path.unlink(missing_ok=True)
    return removed


def kill_processes_in(netns: Netns, *, timeout: float = _STOP_GRACE_SECONDS) -> list[int]:
    """SIGKILL every process inside ``netns`` (by PID) and wait until they are gone.

    Returns the PIDs that were killed. Used for processes the harness did not start
    itself (children of its processes, or programs a test started another way).
    """
    pids = [pid for pid in netns.pids() if pid != os.getpid()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{pid}").exists() and not _is_zombie(pid) for pid in pids):
            break
        time.sleep(0.01)
    else:
        raise HarnessError(f"processes {pids} in network namespace {netns.name} did not exit")
    return pids


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def main() -> None:
    """``python -m acns_operator.local.netns cleanup-stale``: remove dead runs' namespaces."""
    import sys  # only the command-line entry point needs it

    if sys.argv[1:] != ["cleanup-stale"]:
        print("usage: python -m acns_operator.local.netns cleanup-stale", file=sys.stderr)
        raise SystemExit(2)
    removed = cleanup_stale_runs()
    print(
        f"removed {len(removed)} stale namespace(s)"
        + (": " + ", ".join(removed) if removed else "")
    )


if __name__ == "__main__":
    main()
