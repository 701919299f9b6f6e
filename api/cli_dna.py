"""``zhaopian dna``: which indexed videos contain a clip, and the copies found among a library's media."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from zhaopian.modules.dna.check import check_file, dna_module

from .cli_common import LibraryOpt, TenantOpt, _service, out, run
from .service import DEFAULT_LIBRARY

dna_app = typer.Typer(help="Near-duplicates and partial copies (libraries with the dna module).",
                      no_args_is_help=True)


@dna_app.command("check")
def dna_check(
    file: Annotated[Path, typer.Argument(help="A video clip (at least 2 s) or an image.")],
    library: LibraryOpt = DEFAULT_LIBRARY,
    tenant: TenantOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Which indexed videos contain this clip, and where (its spans ↔ theirs); for an image, which
    videos show that picture, and when."""

    def body():
        lib = _service().library(library, tenant)
        dna_module(lib)  # config_invalid before the file is read
        report = check_file(lib, file.expanduser(), str(file))
        if as_json:
            out.print_json(report.model_dump_json())
            return
        noun = "image" if report.kind == "image" else "clip"
        what = "image" if report.kind == "image" else f"clip ({report.duration:.1f} s)"
        if not report.matches:
            out.print(f"{file}: no indexed video contains this {noun}", markup=False, highlight=False)
            return
        out.print(f"{file}: {what} found in {len(report.matches)} indexed medi{'um' if len(report.matches) == 1 else 'a'}",
                  markup=False, highlight=False)
        for match in report.matches:
            out.print(f"  medium {match.media_id} {match.title!r} {match.video}", markup=False, highlight=False)
            for span in match.spans:
                if report.kind == "image":
                    out.print(f"    at {_clock(span.start)}-{_clock(span.end)} (score {span.score:.2f})",
                              markup=False, highlight=False)
                else:
                    out.print(f"    {span.describe()}", markup=False, highlight=False)

    run(body)


@dna_app.command("copies")
def dna_copies(
    media_id: int,
    library: LibraryOpt = DEFAULT_LIBRARY,
    tenant: TenantOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The spans an indexed medium shares with the library's other media, found when either was added."""

    def body():
        spans = _service().copies(media_id, library, tenant)
        if as_json:
            out.print_json(json.dumps([s.model_dump() for s in spans]))
            return
        if not spans:
            out.print(f"medium {media_id}: no copies found", highlight=False)
        for span in spans:
            out.print(span.describe(), markup=False, highlight=False)

    run(body)


def _clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60:02d}:{whole % 60:02d}"
