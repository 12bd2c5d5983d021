"""cffi build script for quic_p2p's C accelerator (API mode, out-of-line).

setup.py names this file in ``cffi_modules``; ``ffibuilder`` is the module-level
builder cffi looks for. ``optional=True`` makes a failed compile a warning, so the
package still installs and runs on its pure-Python twin where no compiler exists.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
HEADER = HERE / "qp2p.h"
SOURCES = ["framing.c", "classify.c", "sha256.c", "token.c", "lru.c"]


def cdef_from_header(text: str) -> str:
    """Turn the C contract into cffi's cdef: no comments, no include guards,
    every ``#define NAME value`` as ``#define NAME ...`` (cffi reads the value
    from the compiled header, so the two can never disagree)."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        m = re.match(r"#define\s+(QP2P_\w+)\s+\S", stripped)
        if m:
            out.append(f"#define {m.group(1)} ...")
        elif stripped.startswith("#"):
            continue  # include guard and includes
        else:
            out.append(line)
    return "\n".join(out)


def _source_path(name: str) -> str:
    rel = os.path.relpath(HERE / name)
    return (
        str(HERE / name) if rel.startswith("..") or os.environ.get("QUIC_P2P_ABS_SOURCES") else rel
    )


def _compile_args() -> list[str]:
    if sys.platform == "win32":
        return ["/O2"]
    extra = os.environ.get("QUIC_P2P_CFLAGS", "")
    return ["-O3", "-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter", *extra.split()]


def _link_args() -> list[str]:
    extra = os.environ.get("QUIC_P2P_LDFLAGS", "").split()
    # Python's own CFLAGS carry -g: without this the shipped .so holds its
    # DWARF (several times the code's size). -S drops debug sections only; the
    # symbol table stays. A build asking for -g (ci/sanitize) keeps them.
    wants_debug = "-g" in os.environ.get("QUIC_P2P_CFLAGS", "").split()
    if sys.platform.startswith("linux") and not wants_debug:
        extra.insert(0, "-Wl,-S")
    return extra


ffibuilder = FFI()
ffibuilder.cdef(cdef_from_header(HEADER.read_text()))
ffibuilder.set_source(
    "quic_p2p.accel._native",
    '#include "qp2p.h"',
    # Relative to the project root when building from it (setuptools' preference
    # for sdists and wheels); absolute when compiled from elsewhere (ci/dev-build).
    sources=[_source_path(s) for s in SOURCES],
    include_dirs=[str(HERE)],
    extra_compile_args=_compile_args(),
    extra_link_args=_link_args(),
    py_limited_api=True,
    optional=True,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
