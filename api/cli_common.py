"""What every ``zhaopian`` command group shares: the consoles, the common options, the service
built from the environment, and one-line product errors."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from zhaopian.search.errors import ZhaopianError

from .service import Service
from .settings import Settings

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

LibraryOpt = Annotated[str, typer.Option("--library", "-l", help="Library to use.")]
TenantOpt = Annotated[str | None, typer.Option("--tenant", help="Tenant (default: ZHAOPIAN_TENANT or 'default').")]


def _service() -> Service:
    return Service(Settings())


def fail(exc: ZhaopianError) -> None:
    err.print(f"error[{exc.code}]: {exc.message}", markup=False, highlight=False)
    raise typer.Exit(1)


def run(fn):
    """Run a command body; product errors become one line on stderr and exit code 1."""
    try:
        return fn()
    except ZhaopianError as exc:
        fail(exc)
