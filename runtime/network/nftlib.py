"""The network area's one seam to nf_tables: run an ``nft`` script in-process through libnftables.

Why in-process: every container start with a published port changes the ruleset, and an
``iptables-restore``/``nft`` process costs 3-20 ms (fork + exec + dynamic linking, more on a busy
host) where a libnftables call costs well under a millisecond. libnftables (Debian's libnftables1,
installed with nftables) takes the same script text as ``nft -f``, so when the library cannot be
loaded the same text is fed to the ``nft`` binary instead (slower, same result).

Thread-safety: a libnftables context is not thread-safe; calls are serialized by a lock (the
container start path publishes ports from a helper thread).
"""

from __future__ import annotations

import ctypes
import threading

NFT_CTX_OUTPUT_HANDLE = 1 << 3
NFT_CTX_OUTPUT_JSON = 1 << 4

_lock = threading.Lock()
_state: dict[str, object] = {}


class NftError(OSError):
    """The script was rejected (syntax, missing object) or could not be run."""


def _lib():
    if "lib" not in _state:
        try:
            lib = ctypes.CDLL("libnftables.so.1", use_errno=True)
        except OSError:
            _state["lib"] = None
            return None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            _state["lib"] = None
            return None
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        _state["lib"], _state["ctx"] = lib, ctx
    return _state["lib"]


def run(script: str, *, json_output: bool = False) -> str:
    """Run ``script`` (one atomic nft transaction); return its output (JSON with handles when asked)."""
    with _lock:
        lib = _lib()
        if lib is None:
            return _run_binary(script, json_output)
        ctx = _state["ctx"]
        lib.nft_ctx_output_set_flags(ctx, (NFT_CTX_OUTPUT_HANDLE | NFT_CTX_OUTPUT_JSON) if json_output else 0)
        rc = lib.nft_run_cmd_from_buffer(ctx, script.encode())
        out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
        err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
    if rc != 0:
        raise NftError(0, _first_error(err) or f"nft failed on: {script.strip().splitlines()[0]}")
    return out


def _run_binary(script: str, json_output: bool) -> str:
    import subprocess

    from core import syscalls

    argv = ["nft", "-j", "-a", "-f", "-"] if json_output else ["nft", "-f", "-"]
    try:
        r = syscalls.run(argv, check=False, input_bytes=script.encode(), timeout_s=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise NftError(0, f"cannot run nft: {exc}") from exc
    if r.returncode != 0:
        raise NftError(0, _first_error(r.stderr.decode(errors="replace")) or "nft failed")
    return r.stdout.decode(errors="replace")


def _first_error(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("Error:"):
            return line
    return text.strip().splitlines()[0] if text.strip() else ""
