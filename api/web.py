"""The editors' web UI: static files from ``zhaopian.web`` served at ``/`` by the API.

No build step: plain HTML, CSS and ES modules, so ``zhaopian serve`` needs nothing else.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(str(files("zhaopian.web"))) / "static"


def mount_ui(app: FastAPI) -> None:
    """Serve the UI at ``/`` (``index.html``) once the API routes are in place."""
    if (WEB_DIR / "index.html").is_file():
        app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="ui")
