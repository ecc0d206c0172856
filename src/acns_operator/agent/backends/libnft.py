"""libnftables through ctypes: one atomic transaction per text batch.

Debian's ``python3-nftables`` is a thin ctypes wrapper over ``libnftables.so.1`` that
only installs into the system Python; this does the same from the project's own
environment. A buffer passed to ``nft_run_cmd_from_buffer`` is one netlink batch: the
kernel applies all of it or none of it. When the library cannot be loaded, the
``nft -f -`` command is used instead (same batch semantics, one process per batch).
"""

from __future__ import annotations

import ctypes
import subprocess
from typing import Any

from acns_operator.errors import AcnsError

NFT_CTX_OUTPUT_JSON = 1 << 4
NFT_CTX_OUTPUT_NUMERIC_ALL = (1 << 7) | (1 << 8) | (1 << 9)


class NftablesError(AcnsError):
    """nftables refused a batch."""


class LibNftables:
    """A libnftables context. Not thread-safe: use it from one thread."""

    def __init__(self, library: str = "libnftables.so.1") -> None:
        self._lib: Any = ctypes.CDLL(library)
        lib = self._lib
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        self._ctx = lib.nft_ctx_new(0)
        if not self._ctx:
            raise NftablesError("nft_ctx_new failed")
        lib.nft_ctx_buffer_output(self._ctx)
        lib.nft_ctx_buffer_error(self._ctx)

    def run(self, commands: str, *, json_output: bool = False) -> str:
        """Run a batch; returns the output, raises :class:`NftablesError` on failure."""
        flags = NFT_CTX_OUTPUT_JSON if json_output else 0
        self._lib.nft_ctx_output_set_flags(self._ctx, flags)
        rc = self._lib.nft_run_cmd_from_buffer(self._ctx, commands.encode())
        output = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode()
        error = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode()
        if rc != 0:
            raise NftablesError(f"nftables refused the batch: {error.strip() or rc}")
        return output

    def close(self) -> None:
        """Free the context."""
        if self._ctx:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None


class NftCommand:
    """The fallback: ``nft -f -`` (and ``nft -j`` for listings)."""

    def run(self, commands: str, *, json_output: bool = False) -> str:
        """Run a batch through the nft binary."""
        argv = ["nft", "-j", "-f", "-"] if json_output else ["nft", "-f", "-"]
        result = subprocess.run(
            argv, input=commands, capture_output=True, text=True, check=False, timeout=60
        )
        if result.returncode != 0:
            raise NftablesError(f"nftables refused the batch: {result.stderr.strip()}")
        return result.stdout

    def close(self) -> None:
        """Nothing to free."""


def open_nftables() -> LibNftables | NftCommand:
    """libnftables when it loads, else the nft command."""
    try:
        return LibNftables()
    except OSError:
        return NftCommand()
