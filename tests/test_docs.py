"""The generated tables in docs/ match the code they are rendered from."""

from __future__ import annotations

import subprocess
from pathlib import Path

from netutil import python_argv, python_env

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_docs_tables_are_up_to_date() -> None:
    out = subprocess.run(
        python_argv(str(DOCS / "render.py"), "--check"),
        capture_output=True,
        text=True,
        timeout=60,
        env=python_env(),
    )
    assert out.returncode == 0, out.stdout + out.stderr
