"""Child processes that log to a file and are stopped by PID.

Shared by the local control plane (etcd, kube-apiserver) and ``acns operator`` run as
a child by the integration tests and the demo: start in a new session with output
appended to a log file (headed by the command line), read the log's tail for error
messages, and stop with SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["Supervised", "log_tail", "start_logged", "terminate"]


class Supervised:
    """Something with ``start()`` and ``stop()`` that is used as a context manager.

    ``with X(...) as x:`` starts it and stops it whatever happens in the block.
    """

    def start(self) -> None:
        """Start; subclasses implement it."""
        raise NotImplementedError

    def stop(self) -> object:
        """Stop; safe to call twice. Subclasses implement it (and may return a status)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        """Start, and return self."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop, whatever happened in the block."""
        self.stop()


def start_logged(
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    preexec_fn: Callable[[], object] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (a terminal's Ctrl-C reaches us only), stdin
    from /dev/null, stdout and stderr appended to ``log_path`` after a ``$ argv`` line.

    Raises OSError when the program cannot be started.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            start_new_session=True,
            preexec_fn=preexec_fn,
        )


def log_tail(log_path: Path, lines: int) -> str:
    """The last ``lines`` lines of the log, or a note that there is none."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return f"(no log at {log_path})"
    return "\n".join(text.splitlines()[-lines:])


def terminate(process: subprocess.Popen[bytes], grace: float) -> int | None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL and reap; the exit status.

    Does nothing to a process that has already exited.
    """
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace)
    return process.returncode
