"""The ``zhaopian`` command line."""

from __future__ import annotations

import html
import json
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from zhaopian.indexer.ingest import resolve_under
from zhaopian.indexer.jobs import Job
from zhaopian.modules.visual.encoders.base import EncoderConfig
from zhaopian.search.errors import ConfigError, NotFound

from .cli_common import LibraryOpt, TenantOpt, _service, err, out, run
from .service import DEFAULT_LIBRARY, DEFAULT_MODULES, Result, Service
from .settings import Settings

app = typer.Typer(help="zhaopian (找片): find the exact clip in your videos by what you remember.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
library_app = typer.Typer(help="Create, list and delete search libraries.", no_args_is_help=True)
media_app = typer.Typer(help="List, show, update and delete indexed media.", no_args_is_help=True)
app.add_typer(library_app, name="library")
app.add_typer(media_app, name="media")
encoder_app = typer.Typer(help="Prepare visual encoders.", no_args_is_help=True)
app.add_typer(encoder_app, name="encoder")
key_app = typer.Typer(help="Issue API keys for the HTTP API.", no_args_is_help=True)
app.add_typer(key_app, name="key")
jobs_app = typer.Typer(help="Ingestion jobs: list, show, cancel, retry, watch progress.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")

def fmt_time(seconds: float) -> str:
    m, s = divmod(seconds, 60)
    return f"{int(m):02d}:{s:05.2f}"


def _rich_highlight(highlight: str) -> Text:
    """``a <em>b</em> c`` (HTML-escaped) -> rich text with the matches in bold yellow."""
    text = Text()
    for i, part in enumerate(re.split(r"</?em>", highlight)):
        text.append(html.unescape(part), style="bold yellow" if i % 2 else None)
    return text


def print_results(results: list[Result], heading: str | None = None, notes: list[str] = ()) -> None:
    if heading:
        out.print(f"[bold]{heading}[/bold]")
    for note in notes:
        err.print(f"note: {note}", markup=False, highlight=False)
    if not results:
        out.print("  no results")
    for i, r in enumerate(results, 1):
        routes = ", ".join(f"{k} {v:.3f}" for k, v in r.routes.items())
        out.print(f"{i:>3}. {fmt_time(r.start)}-{fmt_time(r.end)}  score {r.score:.4f}  [{routes}]  {r.video}",
                  markup=False, highlight=False)
        for m in r.matches[:3]:
            where = m.field if m.route == "meta" else f"{fmt_time(m.start)}-{fmt_time(m.end)}"
            out.print(Text(f"       {m.route} {where}: ").append(_rich_highlight(m.highlight or m.text)),
                      highlight=False)


# -- library -------------------------------------------------------------------------------------
@library_app.command("create")
def library_create(
    name: str,
    encoder: Annotated[str | None, typer.Option(help="Visual encoder, e.g. 'bundled' or "
                                                 "'chinese-clip:OFA-Sys/chinese-clip-vit-base-patch16'.")] = None,
    modules: Annotated[str, typer.Option(help="Comma-separated modules to run.")] = ",".join(DEFAULT_MODULES),
    index: Annotated[str, typer.Option(help="Vector index: auto, flat, sq8 or ivf-sq8.")] = "auto",
    fps: Annotated[float, typer.Option(help="Frames sampled per second of video.")] = 1.0,
    text_index: Annotated[str, typer.Option(help="Text index: tantivy (embedded) or elasticsearch.")] = "tantivy",
    es_url: Annotated[str | None, typer.Option(help="Elasticsearch URL (default: ZHAOPIAN_ES_URL).")] = None,
    rerank: Annotated[str | None, typer.Option(help="Reranker after fusion: none, builtin, vlm:<model> "
                                                    "(e.g. vlm:Qwen/Qwen2.5-VL-3B-Instruct) or "
                                                    "endpoint[:<model>[@<url>]].")] = None,
    tenant: TenantOpt = None,
) -> None:
    """Create a library with its own index configuration."""

    def body():
        svc = _service()
        spec = encoder or svc.settings.encoder
        names = [m.strip() for m in modules.split(",") if m.strip()]
        config = svc.default_config(spec, names, fps, index, text_index, es_url, rerank)
        record = svc.create_library(name, config, tenant)
        out.print(f"created library {record.name!r} (tenant {record.tenant!r}, encoder {spec})")

    run(body)


@library_app.command("list")
def library_list(tenant: TenantOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the tenant's libraries."""

    def body():
        records = _service().libraries(tenant)
        if as_json:
            out.print_json(json.dumps([{"name": r.name, "tenant": r.tenant, "config": r.config} for r in records]))
            return
        table = Table("library", "modules", "encoder")
        for r in records:
            visual = r.config.get("modules", {}).get("visual", {})
            table.add_row(r.name, ", ".join(r.config.get("modules", {})), visual.get("encoder", {}).get("backend", "-"))
        out.print(table)

    run(body)


@library_app.command("compact")
def library_compact(name: str, tenant: TenantOpt = None) -> None:
    """Rebuild a library's indexes from what they hold and reclaim the space of removed media."""

    def body():
        lib = _service().library(name, tenant)
        lib.compact()
        out.print(f"compacted {lib.record.tenant}/{lib.name}", markup=False, highlight=False)

    run(body)


@library_app.command("delete")
def library_delete(name: str, yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
                   tenant: TenantOpt = None) -> None:
    """Delete a library and everything indexed in it (the media files stay)."""
    if not yes and not typer.confirm(f"Delete library {name!r} and its indexes?"):
        raise typer.Exit(1)
    run(lambda: (_service().delete_library(name, tenant), out.print(f"deleted library {name!r}")))


# -- index ---------------------------------------------------------------------------------------
@app.command("index")
def index(
    paths: Annotated[list[Path], typer.Argument(help="Video or image files, or folders to scan.")],
    library: LibraryOpt = DEFAULT_LIBRARY,
    tenant: TenantOpt = None,
    queue_only: Annotated[bool, typer.Option("--queue", help="Only queue the files for `zhaopian worker`.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Index media into a library: one job per file, run here with progress bars (or by workers with
    --queue). Files that fail are reported; the rest still index. Interrupted, it resumes when run again."""

    def body():
        svc = _service()
        jobs = svc.submit(paths, library, tenant)
        if queue_only:
            for job in jobs:
                out.print(f"job {job.id} {job.status}: {job.path}", markup=False, highlight=False)
            return
        before = {job.id for job in jobs if job.status == "done"}
        with _job_bars(quiet) as bars:
            bars.expect(jobs)
            finished = svc.run_jobs(jobs, bars.update)
        failed = 0
        for job in finished:
            if job.id in before:
                out.print(f"unchanged: {job.path} (medium {job.media_id})", markup=False, highlight=False)
            elif job.status != "done":
                failed += 1
                code, message = (job.error.code, job.error.message) if job.error else (job.status, job.status)
                err.print(f"error[{code}]: {message}", markup=False, highlight=False)
            else:
                out.print(f"{job.outcome}: {job.path} (medium {job.media_id})", markup=False, highlight=False)
                if job.outcome != "duplicate":
                    _print_copies(svc, job)
        out.print(f"{len(finished) - failed} of {len(finished)} files ok", highlight=False)
        if failed:
            raise typer.Exit(1)

    run(body)


def _print_copies(svc: Service, job: Job) -> None:
    """The spans a newly indexed medium shares with other media (found in libraries with the dna module)."""
    try:
        spans = svc.copies(job.media_id, job.library, job.tenant) if job.media_id is not None else []
    except NotFound:  # deleted meanwhile
        return
    for span in spans:
        out.print(f"  {span.describe()}", markup=False, highlight=False)


class _JobBars:
    """A bar for all files and one per running file, showing each step's progress."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.total = progress.add_task("[bold]files", total=0)
        self.rows: dict[int, int] = {}
        self.ended: set[int] = set()

    def expect(self, jobs: list[Job]) -> None:
        self.progress.update(self.total, total=len(jobs))
        for job in jobs:
            if not job.active:
                self.update(job)

    def update(self, job: Job) -> None:
        name = Path(job.path).name
        if not job.active:
            if job.id not in self.ended:
                self.ended.add(job.id)
                self.progress.advance(self.total)
            if (row := self.rows.pop(job.id, None)) is not None:
                self.progress.remove_task(row)
            return
        steps = " ".join(f"{step} {value:.0%}" for step, value in job.modules.items())
        if job.id not in self.rows:
            self.rows[job.id] = self.progress.add_task(name, total=1.0)
        self.progress.update(self.rows[job.id], completed=job.progress, description=f"{name}  [dim]{steps}")


@contextmanager
def _job_bars(quiet: bool = False) -> Iterator[_JobBars]:
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, disable=quiet or not err.is_terminal and not sys.stderr.isatty(),
                  transient=True) as progress:
        yield _JobBars(progress)


# -- jobs and workers ------------------------------------------------------------------------------
@jobs_app.command("list")
def jobs_list(library: Annotated[str | None, typer.Option("--library", "-l")] = None, tenant: TenantOpt = None,
              status: Annotated[str | None, typer.Option(help="queued, running, done, failed or cancelled")] = None,
              limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
              as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Ingestion jobs, newest first."""

    def body():
        svc = _service()
        items, total = svc.jobs.list(tenant or svc.settings.tenant, library, status, 0, limit)
        if as_json:
            out.print_json(json.dumps({"items": [j.model_dump(mode="json") for j in items], "total": total}))
            return
        table = Table("id", "library", "status", "progress", "steps", "file", "outcome / error")
        for j in items:
            steps = " ".join(f"{k} {v:.0%}" for k, v in j.modules.items())
            result = j.outcome or (f"{j.error.code}: {j.error.message}" if j.error else "")
            table.add_row(str(j.id), j.library, j.status, f"{j.progress:.0%}", steps, Path(j.path).name, result)
        out.print(table)
        out.print(f"{len(items)} of {total} jobs", highlight=False)

    run(body)


@jobs_app.command("show")
def jobs_show(job_id: int, tenant: TenantOpt = None) -> None:
    """One job as JSON."""
    run(lambda: out.print_json(_service().jobs.get(job_id, tenant or Settings().tenant).model_dump_json()))


@jobs_app.command("cancel")
def jobs_cancel(job_id: int, tenant: TenantOpt = None) -> None:
    """Cancel a queued job, or stop a running one (its file is not kept in the library)."""
    run(lambda: out.print(f"job {job_id}: {_service().jobs.cancel(job_id, tenant or Settings().tenant).status}"))


@jobs_app.command("retry")
def jobs_retry(job_id: int, tenant: TenantOpt = None) -> None:
    """Queue a failed or cancelled job again."""
    run(lambda: out.print(f"job {job_id}: {_service().jobs.retry(job_id, tenant or Settings().tenant).status}"))


@jobs_app.command("watch")
def jobs_watch(library: Annotated[str | None, typer.Option("--library", "-l")] = None,
               tenant: TenantOpt = None) -> None:
    """Progress bars of the queued and running jobs (run by workers) until none is left."""

    def body():
        svc = _service()
        who = tenant or svc.settings.tenant
        active = [j for s in ("running", "queued") for j in svc.jobs.list(who, library, s, 0, 1000)[0]]
        with _job_bars() as bars:
            bars.expect(active)
            while active:
                active = [svc.jobs.get(j.id) for j in active]
                for job in active:
                    bars.update(job)
                active = [j for j in active if j.active]
                time.sleep(0.5)

    run(body)


@app.command("worker")
def worker(
    processes: Annotated[int, typer.Option("--processes", "-p", min=1, help="Worker processes.")] = 1,
    watch: Annotated[list[Path] | None, typer.Option(help="Folder to watch: new files are queued as they "
                                                          "appear (repeatable).")] = None,
    library: LibraryOpt = DEFAULT_LIBRARY,
    tenant: TenantOpt = None,
    drain: Annotated[bool, typer.Option(help="Exit when the queue is empty.")] = False,
) -> None:
    """Run ingestion jobs from the queue (submitted by the API, `index --queue` or --watch).
    Ctrl-C or SIGTERM stops after the current job; a killed worker's job is run again by the next one."""

    def body():
        from .workers import WorkerPool, watchers, worker_main

        if drain and not watch and processes == 1:
            worker_main(drain=True)
            return
        svc = _service()
        for folder in watch or []:
            resolve_under(folder, svc.settings.media_roots)
        pool = WorkerPool(processes, watchers(svc, watch or [], library, tenant, interval=1.0)).start()
        err.print(f"{processes} worker process(es) running" +
                  (f", watching {', '.join(map(str, watch))}" if watch else "") + "; Ctrl-C stops them")
        pool.wait()

    run(body)


# -- search --------------------------------------------------------------------------------------
@app.command("search")
def search_cmd(
    text: Annotated[str | None, typer.Argument(help="What you remember, in Chinese or English.")] = None,
    image: Annotated[Path | None, typer.Option("--image", help="Search by an image file.")] = None,
    library: LibraryOpt = DEFAULT_LIBRARY,
    tenant: TenantOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many segments.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON: results with per-route scores and "
                                                         "highlighted matches, the parsed query, timings.")] = False,
    routes: Annotated[str | None, typer.Option(help="Only these routes, comma-separated "
                                                  "(visual, labels, ocr, asr, meta).")] = None,
    no_rerank: Annotated[bool, typer.Option("--no-rerank", help="Skip the library's reranker.")] = False,
) -> None:
    """Search a library by text or by image; prints segments (video, start, end, score) and why they matched.

    Cues steer the search: 说/says -> speech, 字幕/text on screen -> on-screen text; "quoted words" must
    appear exactly; filters: #tag, type:video, shorter than 30 s, 2023年以后, since 2021.
    """
    def body():
        only = [r.strip() for r in routes.split(",") if r.strip()] if routes else None
        response = _service().search_report(text, image, library, tenant, top_k, only, rerank=not no_rerank)
        if as_json:
            out.print_json(response.model_dump_json())
        else:
            print_results(response.results, notes=response.notes)

    run(body)


# -- media ---------------------------------------------------------------------------------------
@media_app.command("list")
def media_list(library: LibraryOpt = DEFAULT_LIBRARY, tenant: TenantOpt = None,
               offset: int = 0, limit: int = 100, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List indexed media."""

    def body():
        records = _service().media(library, tenant, offset, limit)
        if as_json:
            out.print_json(json.dumps([r.as_dict() for r in records], ensure_ascii=False))
            return
        table = Table("id", "kind", "duration", "title", "path")
        for r in records:
            table.add_row(str(r.id), r.kind, fmt_time(r.duration), r.title, r.path)
        out.print(table)

    run(body)


@media_app.command("show")
def media_show(media_id: int, library: LibraryOpt = DEFAULT_LIBRARY, tenant: TenantOpt = None) -> None:
    """Show one medium as JSON."""
    run(lambda: out.print_json(json.dumps(_service().medium(media_id, library, tenant).as_dict(), ensure_ascii=False)))


@media_app.command("update")
def media_update(media_id: int, library: LibraryOpt = DEFAULT_LIBRARY, tenant: TenantOpt = None,
                 title: str | None = None, description: str | None = None,
                 tags: Annotated[str | None, typer.Option(help="Comma-separated tags.")] = None,
                 field: Annotated[list[str] | None, typer.Option(
                     "--field", help="A custom field as NAME=VALUE (repeatable; replaces all custom fields).")] = None,
                 ) -> None:
    """Update a medium's title, description, tags or custom fields; they become searchable at once."""
    tag_list = [t.strip() for t in tags.split(",") if t.strip()] if tags is not None else None

    def body():
        fields = None
        if field is not None:
            pairs = [f.partition("=") for f in field]
            if any(not name.strip() or not sep for name, sep, _ in pairs):
                raise ConfigError("custom fields are given as NAME=VALUE")
            fields = {name.strip(): value for name, _, value in pairs}
        record = _service().update_medium(media_id, library, tenant, title=title, description=description,
                                          tags=tag_list, fields=fields)
        out.print_json(json.dumps(record.as_dict(), ensure_ascii=False))

    run(body)


@media_app.command("delete")
def media_delete(media_id: int, library: LibraryOpt = DEFAULT_LIBRARY, tenant: TenantOpt = None) -> None:
    """Delete a medium from the library: its vectors and text go too (the file stays)."""
    run(lambda: (_service().delete_medium(media_id, library, tenant), out.print(f"deleted medium {media_id}")))


# -- encoder -------------------------------------------------------------------------------------
@encoder_app.command("export-onnx")
def encoder_export_onnx(
    spec: Annotated[str, typer.Argument(help="Source encoder, e.g. chinese-clip:OFA-Sys/chinese-clip-vit-base-patch16.")],
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the ONNX model into.")],
    quantize: Annotated[bool, typer.Option(help="Quantise weights to int8 (faster on CPU).")] = True,
) -> None:
    """Export a CLIP-family encoder to ONNX Runtime; use it with --encoder onnx:OUT_DIR."""

    def body():
        from zhaopian.modules.visual.encoders.onnx import export_onnx

        path = export_onnx(EncoderConfig.parse_spec(spec), out_dir, quantize=quantize)
        out.print(f"wrote {path}; create a library with: zhaopian library create NAME --encoder onnx:{path}",
                  highlight=False)

    run(body)


# -- HTTP API ------------------------------------------------------------------------------------
@key_app.command("create")
def key_create(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant the key belongs to (created if missing).")],
    admin: Annotated[bool, typer.Option("--admin", help="The key may also create tenants and keys.")] = False,
) -> None:
    """Issue an API key; it is printed once and only its hash is kept."""

    def body():
        from .auth import create_key

        svc = _service()
        svc.catalog.ensure_tenant(tenant)
        issued = create_key(svc.catalog, tenant, admin)
        err.print(f"{'admin ' if admin else ''}key {issued.record.prefix}… for tenant {tenant!r} "
                  f"(shown once, keep it safe):", markup=False, highlight=False)
        out.print(issued.key, markup=False, highlight=False)

    run(body)


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=0, help="Ingestion worker processes to run beside the API "
                                                     "(0: run `zhaopian worker` elsewhere).")] = 1,
    ui_key: Annotated[bool, typer.Option(help="Print the web UI's address with a key of ZHAOPIAN_TENANT.")] = True,
) -> None:
    """Run the HTTP API (docs at /docs) and the web UI (at /), with ingestion workers."""

    def body():
        import uvicorn

        from .http import create_app
        from .workers import WorkerPool

        svc = _service()
        if ui_key:
            key = _ui_key(svc)
            shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            err.print(f"web UI: http://{shown}:{port}/#key={key}", markup=False, highlight=False)
        pool = WorkerPool(workers).start() if workers else None
        try:
            # idle connections stay open longer than clients keep them (httpx 5 s, browsers more), so a
            # client never reuses one the server is closing at that moment
            uvicorn.run(create_app(svc), host=host, port=port, timeout_keep_alive=75)
        finally:
            if pool is not None:
                pool.stop()
            svc.close()

    run(body)


def _ui_key(svc: Service) -> str:
    """The web UI's key for the CLI's tenant: kept in the data directory (owner-only), made on first use."""
    from .auth import Unauthorized, authenticate, create_key

    path = svc.settings.data_dir / "ui.key"
    if path.is_file():
        key = path.read_text().strip()
        try:
            authenticate(svc.catalog, key)
            return key
        except Unauthorized:
            pass
    svc.catalog.ensure_tenant(svc.settings.tenant)
    key = create_key(svc.catalog, svc.settings.tenant).key
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".ui.key.tmp")
    tmp.write_text(key)
    tmp.chmod(0o600)
    tmp.replace(path)
    return key


# -- maintenance -----------------------------------------------------------------------------------
@app.command("doctor")
def doctor(
    repair: Annotated[bool, typer.Option("--repair", help="Fix what can be fixed.")] = False,
    prune_missing: Annotated[bool, typer.Option("--prune-missing",
                                                help="With --repair: remove media whose file is gone.")] = False,
) -> None:
    """Verify every catalog against its indexes and files (all tenants); exit 1 while problems remain."""

    def body():
        from .doctor import Doctor

        findings = Doctor(_service(), repair, prune_missing).run()
        if not findings:
            out.print("everything is consistent")
            return
        table = Table("where", "check", "problem", "state")
        for f in findings:
            table.add_row(f.where, f.check, f.problem, "repaired" if f.repaired else "[red]needs attention")
        out.print(table)
        if any(not f.repaired for f in findings):
            if not repair:
                err.print("run `zhaopian doctor --repair` to fix what can be fixed")
            raise typer.Exit(1)

    run(body)


@app.command("backup")
def backup_cmd(
    library: Annotated[str, typer.Argument(help="Library to back up.")],
    dest: Annotated[Path, typer.Argument(help="Archive to write (.tar, or .tar.gz to compress).")],
    tenant: TenantOpt = None,
    uploads: Annotated[bool, typer.Option(help="Include the library's uploaded files.")] = True,
) -> None:
    """Back up a library (catalog, indexes, uploaded files) into one archive, consistently."""

    def body():
        from .backup import backup

        manifest = backup(_service(), library, dest, tenant, uploads)
        out.print(f"backed up {manifest.tenant}/{manifest.library}: {len(manifest.files)} files -> {dest}",
                  markup=False, highlight=False)

    run(body)


@app.command("restore")
def restore_cmd(
    archive: Annotated[Path, typer.Argument(help="An archive from `zhaopian backup`.")],
    name: Annotated[str | None, typer.Option("--as", help="Library name (default: the one backed up).")] = None,
    tenant: TenantOpt = None,
) -> None:
    """Restore a library from a backup archive (checked file by file before anything is created)."""

    def body():
        from .backup import restore

        record = restore(_service(), archive, name, tenant)
        out.print(f"restored {record.tenant}/{record.name}", markup=False, highlight=False)

    run(body)


# -- evaluation ------------------------------------------------------------------------------------
@app.command("eval")
def eval_cmd(
    queries: Annotated[Path | None, typer.Argument(help="Labelled queries: JSONL, or MSR-VTT's test_videodatainfo.json "
                                                        "or MSRVTT_JSFUSION_test.csv.")] = None,
    library: Annotated[str | None, typer.Option("--library", "-l", help="Library to search (--demo: 'demo').")] = None,
    tenant: TenantOpt = None,
    demo_set: Annotated[bool, typer.Option("--demo", help="The bundled demo's labelled queries (indexes the demo "
                                                           "first if needed).")] = False,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, max=1000)] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """R@1, R@5, R@10, MRR and latency per query kind of a labelled query set against a library."""

    def body():
        from zhaopian.search.evaluate import EvalQuery, Found, evaluate, load_queries

        svc = _service()
        if demo_set:
            path, name = _demo_library(svc, library or "demo"), library or "demo"
        elif queries is None:
            raise ConfigError("name a query file, or use --demo")
        else:
            path, name = queries, library or DEFAULT_LIBRARY
        labelled = load_queries(path)
        svc.library(name, tenant)  # an unknown library fails before any query runs

        def search(q: EvalQuery, k: int) -> list[Found]:
            text, image = (None, Path(q.query)) if q.kind == "image" else (q.query, None)
            results = svc.search_report(text, image, name, tenant, k).results
            return [Found(video=r.video, start=r.start, end=r.end) for r in results]

        with Progress(TextColumn("[bold]queries"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                      console=err, transient=True, disable=as_json or not sys.stderr.isatty()) as bar:
            task = bar.add_task("", total=len(labelled))
            report = evaluate(labelled, search, top_k, on_query=lambda *_: bar.advance(task))
        if as_json:
            out.print_json(report.model_dump_json())
            return
        table = Table("queries", "n", *(f"R@{k}" for k in (1, 5, 10)), "MRR", "p50 ms", "p95 ms",
                      title=f"{len(labelled)} labelled queries against library {name!r} (top {top_k})")
        for group, s in report.groups.items():
            table.add_row(group, str(s.n), *(f"{v:.2f}" for v in s.recall.values()), f"{s.mrr:.2f}",
                          f"{s.latency_ms_p50:.0f}", f"{s.latency_ms_p95:.0f}")
        out.print(table)

    run(body)


def _demo_library(svc: Service, library: str) -> Path:
    """The demo built and indexed into ``library`` (what is already indexed is not redone); its queries file."""
    from zhaopian.indexer.demo import DEMO_QUERIES, build_demo
    from zhaopian.indexer.ingest import MEDIA_SUFFIXES

    demo_dir = build_demo(svc.settings.upload_dir / "demo")
    if library not in {r.name for r in svc.libraries()}:
        svc.create_library(library)
    files = sorted(p for p in demo_dir.iterdir() if p.suffix.lower() in MEDIA_SUFFIXES)
    svc.index(files, library)
    return demo_dir / DEMO_QUERIES


# -- demo ----------------------------------------------------------------------------------------
@app.command("demo")
def demo(
    library: LibraryOpt = "demo",
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Segments shown per query.")] = 3,
) -> None:
    """Build the bundled demo (real media from packages), index it, and search it in Chinese, English and by image."""

    def body():
        from zhaopian.indexer.demo import build_demo, load_queries, query_image_path
        from zhaopian.indexer.ingest import MEDIA_SUFFIXES

        svc = _service()
        demo_dir = build_demo(svc.settings.upload_dir / "demo")
        if library not in {r.name for r in svc.libraries()}:
            svc.create_library(library)
        files = sorted(p for p in demo_dir.iterdir() if p.suffix.lower() in MEDIA_SUFFIXES)
        results = svc.index(files, library)
        done = sum(r.status != "failed" for r in results)
        out.print(f"demo: {done} of {len(files)} media indexed in library {library!r} ({demo_dir})", highlight=False)
        for r in results:
            if r.status == "failed":
                err.print(f"error[{r.code}]: {r.message}", markup=False, highlight=False)

        queries = load_queries(demo_dir)
        found = {q.id: _ask(svc, q, demo_dir, library, top_k) for q in queries}  # each query runs once
        firsts = [("text", "zh", "visual"), ("text", "en", "visual"), ("image", None, "visual"),
                  ("text", None, "ocr"), ("text", None, "asr")]
        picks = [q for kind, lang, about in firsts
                 for q in [next((q for q in queries if q.kind == kind and q.about == about
                                 and (lang is None or q.lang == lang)), None)] if q is not None]
        for q in picks:
            what = f"image query {query_image_path(demo_dir, q).name}" if q.kind == "image" else f'{q.lang} query "{q.query}"'
            print_results(found[q.id], f"\n{what}  (expected {q.video} {fmt_time(q.start)}-{fmt_time(q.end)})")

        first = {q.id: bool(found[q.id]) and _matches(found[q.id][0], q) for q in queries}
        hits = sum(first.values())
        by_kind = ", ".join(f"{about} {sum(first[q.id] for q in group)}/{len(group)}"
                            for about in ("visual", "ocr", "asr")
                            if (group := [q for q in queries if q.about == about]))
        out.print(f"\nall {len(queries)} labelled demo queries: right segment first for {hits} "
                  f"(R@1 = {hits / len(queries):.2f}; {by_kind})", highlight=False)

    run(body)


def _ask(svc: Service, q, demo_dir: Path, library: str, top_k: int) -> list[Result]:
    from zhaopian.indexer.demo import query_image_path

    if q.kind == "image":
        return svc.search(image=query_image_path(demo_dir, q), library=library, top_k=top_k)
    return svc.search(q.query, library=library, top_k=top_k)


def _matches(result: Result, q) -> bool:
    """The result is the labelled medium (or another showing the same) and overlaps the labelled span."""
    return q.is_hit(result.video, result.start, result.end)


# -- faces: zhaopian faces add-person/people/remove-person (api/cli_faces.py, built on the helpers above)
from .cli_faces import faces_app

app.add_typer(faces_app, name="faces")

# -- dna: zhaopian dna check/copies (api/cli_dna.py, built on the helpers above)
from .cli_dna import dna_app

app.add_typer(dna_app, name="dna")


if __name__ == "__main__":  # pragma: no cover
    app()
