"""``zhaopian faces``: register the people a library's faces module can find by name."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from zhaopian.modules.faces.people import add_person, list_people, remove_person

from .cli_common import LibraryOpt, TenantOpt, _service, out, run
from .service import DEFAULT_LIBRARY

faces_app = typer.Typer(help="People's faces: register people from photos, then search with person:NAME.",
                        no_args_is_help=True)


@faces_app.command("add-person")
def faces_add_person(
    name: Annotated[str, typer.Argument(help="The person's name, e.g. 张三 or 'Eileen Collins'.")],
    photos: Annotated[list[Path], typer.Argument(help="Photos showing the person's face (the largest face counts).")],
    library: LibraryOpt = DEFAULT_LIBRARY,
    tenant: TenantOpt = None,
) -> None:
    """Register a person from photos (or add photos to one); then search with person:NAME."""

    def body():
        svc = _service()
        person = add_person(svc.library(library, tenant), name, [(str(p), p) for p in photos])
        out.print(f"{person.name}: {person.photos} photo(s) in library {library!r}; "
                  f"search with: zhaopian search 'person:{person.name}' --library {library}",
                  markup=False, highlight=False)

    run(body)


@faces_app.command("people")
def faces_people(library: LibraryOpt = DEFAULT_LIBRARY, tenant: TenantOpt = None,
                 as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the people registered in a library."""

    def body():
        people = list_people(_service().library(library, tenant))
        if as_json:
            out.print_json(json.dumps([{"name": p.name, "photos": p.photos, "created": p.created} for p in people]))
            return
        table = Table("person", "photos", "registered")
        for p in people:
            table.add_row(p.name, str(p.photos), datetime.fromtimestamp(p.created).strftime("%Y-%m-%d %H:%M"))
        out.print(table)

    run(body)


@faces_app.command("remove-person")
def faces_remove_person(name: str, library: LibraryOpt = DEFAULT_LIBRARY, tenant: TenantOpt = None) -> None:
    """Forget a registered person (their photos' descriptors); indexed media are not touched."""

    def body():
        remove_person(_service().library(library, tenant), name)
        out.print(f"removed {name!r} from library {library!r}", markup=False, highlight=False)

    run(body)
