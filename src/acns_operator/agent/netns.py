"""Running work inside a named network namespace, from one dedicated thread.

The agent itself may live in another namespace (tests run it next to the API server
on the host's loopback while it enforces in a "node" namespace). Namespaces belong to
threads on Linux, so one worker thread enters the namespace once (``setns``) and every
nftables call, ``ip`` command and conntrack read runs there; child processes started
from that thread inherit its namespace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from acns_operator.errors import ConfigurationError

T = TypeVar("T")

CLONE_NEWNET = 0x40000000


def _setns(path: str) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({path}): {os.strerror(errno)}")
    finally:
        os.close(fd)


class NetnsRunner:
    """Runs callables in a network namespace (or, with ``None``, in the current one)."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self._executor: ThreadPoolExecutor | None = None
        if netns is not None:
            path = netns if netns.startswith("/") else f"/run/netns/{netns}"
            if not os.path.exists(path):
                raise ConfigurationError(f"network namespace {netns!r} does not exist ({path})")
            self._executor = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix=f"netns-{os.path.basename(path)}",
                initializer=_setns,
                initargs=(path,),
            )
            # Fail now, not at the first packet filter update, if setns is refused.
            self.call(lambda: None)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the namespace and return its result (exceptions propagate)."""
        if self._executor is None:
            return fn()
        return self._executor.submit(fn).result()

    def run(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command in the namespace."""
        return self.call(
            lambda: subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)
        )

    def close(self) -> None:
        """Stop the worker thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
