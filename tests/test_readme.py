"""The README's Python examples run as written."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from netutil import python_argv, python_env

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(code: str) -> None:
    out = subprocess.run(
        python_argv("-c", code), capture_output=True, text=True, timeout=60, env=python_env()
    )
    assert out.returncode == 0, out.stderr
