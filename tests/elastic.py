"""pytest plugin: an Elasticsearch-compatible server for the tests that need one.

The session-scoped fixture ``es_url`` yields a server URL:

* ``ZHAOPIAN_TEST_ES_URL`` set: that server (a real Elasticsearch 8.x);
* otherwise a private ``noida-db`` (an Elasticsearch-8.15-API-compatible server
  on PyPI, a slow stand-in) started on a free port with its data in a temporary
  folder, and stopped with its whole process group at the end of the session.

Tests are skipped, saying how to get a server, when neither is available.
Load it with ``pytest_plugins = ["elastic"]`` (the tests folder is on ``sys.path``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

URL_ENV = "ZHAOPIAN_TEST_ES_URL"
STARTUP_SECONDS = 20.0
INSTALL_HINT = f"install the test server with `pip install noida-db==0.2.3`, or set {URL_ENV} to an Elasticsearch 8.x URL"


def _noida_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "noida-db"  # the venv's bin, even when it is not on PATH
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("noida-db")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")
def es_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get(URL_ENV, "").strip()
    if external:
        if not _answers(external):
            pytest.skip(f"{URL_ENV}={external} does not answer")
        yield external
        return
    binary = _noida_binary()
    if binary is None:
        pytest.skip(f"no Elasticsearch-compatible server: {INSTALL_HINT}")
    data = tmp_path_factory.mktemp("noida-db")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = data / "server.log"
    with open(log, "wb") as out:
        try:
            process = subprocess.Popen(
                [binary, "start", "--only", "elasticsearch", "--elasticsearch-port", str(port),
                 "--data-dir", str(data / "data")],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            pytest.skip(f"cannot start {binary}: {exc}; {INSTALL_HINT}")
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _answers(url):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-500:]
                pytest.skip(f"{binary} did not answer on {url} within {STARTUP_SECONDS:.0f} s: {tail}")
            time.sleep(0.1)
        yield url
    finally:
        _stop(process)
