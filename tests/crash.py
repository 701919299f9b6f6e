"""Crash a child process at a chosen point: the tests' stand-in for kill -9 mid-write."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXIT = 9


def die_at(imports: str, patch: str, work: str) -> None:
    """Run ``work`` in a new Python process after ``patch`` (a statement that makes the crash point call
    ``os._exit(9)``), and check that the process died there rather than finishing or failing otherwise."""
    code = f"import os\n{imports}\n{patch}\n{work}\n"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    assert subprocess.run([sys.executable, "-c", code], env=env, check=False).returncode == EXIT
