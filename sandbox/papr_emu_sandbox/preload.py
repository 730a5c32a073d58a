"""Building the preload library (``preload.c``, package data) once, into a cache directory.

The library is compiled at first use with the system's C compiler (``$CC``, else ``cc``
or ``gcc``) and kept under ``$XDG_CACHE_HOME/papr-emu/sandbox/`` (default
``~/.cache/...``), in a directory named by the SHA-256 of the source, the compiler and
its flags: the same inputs give the same file, and a changed source a new one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Final

FLAGS: Final = ("-O2", "-Wall", "-Wextra", "-fPIC", "-shared")
LIBS: Final = ("-ldl", "-lpthread")
NAME: Final = "libpapr-emu-sandbox.so"


class BuildError(Exception):
    """The preload library cannot be built (no compiler, or it failed)."""


def compiler() -> str:
    """The C compiler to use; BuildError when there is none."""
    for candidate in (os.environ.get("CC"), "cc", "gcc"):
        if candidate and (found := shutil.which(candidate)):
            return found
    raise BuildError("no C compiler found ($CC, cc or gcc): the sandbox compiles its preload library at first use "
                     "(on Debian: apt-get install gcc libc6-dev)")  # fmt: skip


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "papr-emu" / "sandbox"


def preload_library() -> Path:
    """The built library, compiling it if this source and compiler have not been built yet."""
    source = files("papr_emu_sandbox").joinpath("preload.c").read_bytes()
    cc = compiler()
    key = hashlib.sha256(b"\0".join([source, cc.encode(), *(flag.encode() for flag in FLAGS + LIBS)])).hexdigest()
    target = cache_dir() / key[:16] / NAME
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        source_path = Path(work) / "preload.c"
        source_path.write_bytes(source)
        built = Path(work) / NAME
        result = subprocess.run([cc, *FLAGS, "-o", str(built), str(source_path), *LIBS], capture_output=True, text=True)
        if result.returncode != 0:
            raise BuildError(f"{cc} failed to build the preload library:\n{result.stderr.strip()}")
        os.replace(built, target)  # atomic: a concurrent first use sees the old state or the whole file
    return target
