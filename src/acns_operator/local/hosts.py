"""TCP echo hosts: the "internet" servers and the pod listeners of the test topology.

One host-server process runs per namespace that has listeners (started lazily by
:class:`HostServer`): ``python -m acns_operator.local.hosts`` inside the namespace. It
reads commands on stdin, one per line, and answers each with one line on stdout:

======================  ===================================================================
``listen IP PORT``      open a TCP listener; ``ok`` or ``error <why>``
``close IP PORT``       close that listener and every connection it accepted; ``ok``
``connections [IP PORT]``  ``ok N``: open accepted connections (of one listener, or all)
``quit`` or end of input  close everything and exit
======================  ===================================================================

Every accepted connection echoes what it receives until the peer closes it, so a test
can open a connection, wait (past a TTL, across an agent restart) and then check that
the same connection still carries data. One process serves any number of listeners, so
adding a listener costs one round trip on a pipe, not a Python start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from acns_operator.errors import HarnessError
from acns_operator.local.netns import ManagedProcess, Netns

__all__ = ["HostServer", "Listener", "main"]

_REPLY_TIMEOUT_SECONDS = 5.0
_START_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Listener:
    """A TCP echo listener on ``ip:port`` served by a :class:`HostServer`."""

    ip: str
    port: int
    server: HostServer

    def connections(self) -> int:
        """How many connections this listener has accepted that are still open."""
        return self.server.connections(self.ip, self.port)

    def close(self) -> None:
        """Stop listening and close the connections this listener accepted."""
        self.server.close_listener(self.ip, self.port)


class HostServer:
    """Controls one host-server process inside a namespace (see the module docstring)."""

    def __init__(self, process: ManagedProcess) -> None:
        """Wrap a started host-server process; use :meth:`start` to create one."""
        self.process = process
        self._buffer = b""
        self.listeners: dict[tuple[str, int], Listener] = {}

    @classmethod
    def start(cls, netns: Netns, *, log_path: os.PathLike[str] | str) -> HostServer:
        """Start the host-server process in ``netns`` and wait until it answers."""
        from pathlib import Path  # local: only this constructor needs paths

        process = netns.spawn(
            [sys.executable, "-m", "acns_operator.local.hosts"],
            log_path=Path(log_path),
            name=f"hosts@{netns.name}",
            pipe_stdin=True,
            pipe_stdout=True,
        )
        server = cls(process)
        try:
            server.command("connections", timeout=_START_TIMEOUT_SECONDS)
        except HarnessError:
            process.stop()
            raise
        return server

    def command(self, line: str, *, timeout: float = _REPLY_TIMEOUT_SECONDS) -> str:
        """Send one command and return the reply without its ``ok`` (raise on ``error``)."""
        self._send(f"{line}\n")
        reply = self._read_line(timeout)
        if reply == "ok" or reply.startswith("ok "):
            return reply[3:]
        raise HarnessError(f"host server {self.process.name}: `{line}` failed: {reply}")

    def _send(self, text: str) -> None:
        try:
            self.process.stdin.write(text.encode())
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise HarnessError(
                f"host server {self.process.name} (pid {self.process.pid}) is gone; "
                f"log:\n{self.process.log_tail()}"
            ) from exc

    def _read_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HarnessError(
                    f"host server {self.process.name} (pid {self.process.pid}) did not reply "
                    f"within {timeout:g} s; log:\n{self.process.log_tail()}"
                )
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                raise HarnessError(
                    f"host server {self.process.name} (pid {self.process.pid}) exited; "
                    f"log:\n{self.process.log_tail()}"
                )
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def listen(self, ip: str, port: int) -> Listener:
        """Open a TCP echo listener on ``ip:port`` (idempotent)."""
        key = (ip, port)
        if key not in self.listeners:
            self.command(f"listen {ip} {port}")
            self.listeners[key] = Listener(ip, port, self)
        return self.listeners[key]

    def listen_all(self, addresses: Sequence[tuple[str, int]]) -> list[Listener]:
        """Open many listeners with the commands pipelined (one round trip in all)."""
        new = list(dict.fromkeys(key for key in addresses if key not in self.listeners))
        self._send("".join(f"listen {ip} {port}\n" for ip, port in new))
        failures = []
        for ip, port in new:
            reply = self._read_line(_REPLY_TIMEOUT_SECONDS)
            if reply == "ok":
                self.listeners[(ip, port)] = Listener(ip, port, self)
            else:
                failures.append(f"listen {ip} {port}: {reply}")
        if failures:
            raise HarnessError(f"host server {self.process.name}: " + "; ".join(failures))
        return [self.listeners[key] for key in addresses]

    def close_listener(self, ip: str, port: int) -> None:
        """Close the listener on ``ip:port`` and its connections."""
        self.command(f"close {ip} {port}")
        self.listeners.pop((ip, port), None)

    def connections(self, ip: str | None = None, port: int | None = None) -> int:
        """Open accepted connections, of one listener or of all of them."""
        target = "" if ip is None else f" {ip} {port}"
        return int(self.command(f"connections{target}"))

    def stop(self) -> None:
        """Ask the process to quit, then stop it by PID if it does not."""
        if self.process.alive():
            with contextlib.suppress(BrokenPipeError, ValueError, OSError):
                self.process.stdin.write(b"quit\n")
                self.process.stdin.flush()
            with contextlib.suppress(HarnessError):
                self.process.wait(1.0)
        self.process.stop()


# --- the process side ----------------------------------------------------------------


class _EchoHosts:
    """Listeners and their open connections, inside the host-server process."""

    def __init__(self) -> None:
        self.servers: dict[tuple[str, int], asyncio.Server] = {}
        self.connections: dict[tuple[str, int], set[asyncio.StreamWriter]] = {}

    async def listen(self, ip: str, port: int) -> None:
        key = (ip, port)
        if key in self.servers:
            return
        open_connections: set[asyncio.StreamWriter] = set()

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            open_connections.add(writer)
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass  # a reset from the peer (or a firewall) ends the connection like EOF
            finally:
                open_connections.discard(writer)
                writer.close()

        self.servers[key] = await asyncio.start_server(echo, ip, port, reuse_address=True)
        self.connections[key] = open_connections

    async def close(self, ip: str, port: int) -> None:
        key = (ip, port)
        server = self.servers.pop(key, None)
        for writer in list(self.connections.pop(key, set())):
            writer.close()
        if server is not None:
            server.close()
            await server.wait_closed()

    def count(self, key: tuple[str, int] | None) -> int:
        if key is not None:
            return len(self.connections.get(key, ()))
        return sum(len(group) for group in self.connections.values())

    async def close_all(self) -> None:
        for key in list(self.servers):
            await self.close(*key)


async def _serve() -> None:
    hosts = _EchoHosts()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode():
        words = line.split()
        try:
            reply = await _handle(hosts, words)
        except (OSError, ValueError) as exc:
            reply = f"error {' '.join(words)}: {exc}"
        if reply is None:
            break
        sys.stdout.write(reply + "\n")
        sys.stdout.flush()
    await hosts.close_all()


async def _handle(hosts: _EchoHosts, words: list[str]) -> str | None:
    match words:
        case ["listen", ip, port]:
            await hosts.listen(ip, int(port))
            return "ok"
        case ["close", ip, port]:
            await hosts.close(ip, int(port))
            return "ok"
        case ["connections"]:
            return f"ok {hosts.count(None)}"
        case ["connections", ip, port]:
            return f"ok {hosts.count((ip, int(port)))}"
        case ["quit"]:
            return None
        case _:
            return f"error unknown command: {' '.join(words)}"


def main() -> None:
    """Entry point of the host-server process (see the module docstring)."""
    asyncio.run(_serve())


if __name__ == "__main__":
    main()
