"""The generated tables in docs/ match the code they are rendered from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import quic_p2p

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_docs_tables_are_up_to_date() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(quic_p2p.__file__).resolve().parent.parent)}
    out = subprocess.run(
        [sys.executable, str(DOCS / "render.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
