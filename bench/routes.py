"""Hybrid search against each route alone, on the demo's labelled queries.

The bundled demo (``zhaopian.indexer.demo.build_demo``) is indexed once with every
offline module (visual, labels, ocr, asr, meta). Each labelled query (Chinese and
English text about what is seen, on screen or said, and image queries) then runs

* through one route at a time (``Service.search(..., routes=[name])``), and
* through all of them, fused by reciprocal-rank fusion (the default) and by the
  normalised-score blend,

and is scored by where the first right segment lands: the labelled medium (or another
span labelled as showing the same photo), overlapping the labelled span (a still: the
result contains its instant). Reported per route and
per query kind: R@1, R@5 and MRR (reciprocal rank of the first right result in the top
10; 0 when it is not there).

    python bench/routes.py                      # ~2 min on 2 cores (the demo build is cached)
    python bench/routes.py --json routes.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from machine import machine_info  # bench/machine.py

from zhaopian.api.service import Service
from zhaopian.api.settings import Settings
from zhaopian.indexer.demo import DEMO_QUERIES, build_demo
from zhaopian.indexer.ingest import MEDIA_SUFFIXES
from zhaopian.search.evaluate import EvalQuery, EvalReport, Found, evaluate, load_queries

ROUTES = ["visual", "labels", "ocr", "asr", "meta"]
TOP = 10


def kind_of(q: EvalQuery) -> str:
    return "image" if q.kind == "image" else f"text:{q.about}"


def row(report: EvalReport, queries: list[EvalQuery], kinds: list[str]) -> dict[str, dict[str, float]]:
    """R@1, R@5 and MRR over all queries and per kind, from the ranks ``zhaopian eval`` computes."""

    def scores(ids: list[str]) -> dict[str, float]:
        ranks = [report.ranks[i] for i in ids]
        n = len(ranks) or 1
        return {"R@1": sum(r == 1 for r in ranks) / n, "R@5": sum(r is not None and r <= 5 for r in ranks) / n,
                "MRR": sum(1 / r for r in ranks if r) / n, "n": len(ranks)}

    table = {"all": scores([q.id for q in queries])}
    for kind in kinds:
        table[kind] = scores([q.id for q in queries if kind_of(q) == kind])
    return table


def run(cache_dir: Path) -> dict:
    demo_dir = build_demo(cache_dir / "demo")
    with tempfile.TemporaryDirectory() as data:
        svc = Service(Settings(data_dir=data, media_root=demo_dir, threads=1))
        svc.create_library("bench", svc.default_config())
        files = sorted(p for p in demo_dir.iterdir() if p.suffix.lower() in MEDIA_SUFFIXES)
        indexed = svc.index(files, "bench")
        assert all(r.status != "failed" for r in indexed), [r.message for r in indexed if r.status == "failed"]
        queries = load_queries(demo_dir / DEMO_QUERIES)

        def route_search(routes: list[str] | None):
            def ask(q: EvalQuery, k: int) -> list[Found]:
                text, image = (None, q.query) if q.kind == "image" else (q.query, None)
                found = svc.search(text, image, library="bench", top_k=k, routes=routes)
                return [Found(video=r.video, start=r.start, end=r.end) for r in found]
            return ask

        reports: dict[str, EvalReport] = {}
        for route in ROUTES:
            reports[route] = evaluate(queries, route_search([route]), TOP)
        reports["hybrid (rrf)"] = evaluate(queries, route_search(None), TOP)
        lib = svc.library("bench")
        lib.config.fusion.method = "blend"
        reports["hybrid (blend)"] = evaluate(queries, route_search(None), TOP)
        svc.close()
    kinds = sorted({kind_of(q) for q in queries})
    table = {name: row(report, queries, kinds) for name, report in reports.items()}
    return {"machine": machine_info(), "queries": len(queries), "kinds": {k: sum(kind_of(q) == k for q in queries)
                                                                          for k in kinds}, "table": table}


def markdown(report: dict) -> str:
    kinds = list(report["kinds"])
    head = "| route | R@1 | R@5 | MRR | " + " | ".join(f"R@1 {k} ({report['kinds'][k]})" for k in kinds) + " |"
    lines = [head, "|" + "---|" * (4 + len(kinds))]
    for name, row in report["table"].items():
        a = row["all"]
        lines.append(f"| {name} | {a['R@1']:.2f} | {a['R@5']:.2f} | {a['MRR']:.2f} | "
                     + " | ".join(f"{row[k]['R@1']:.2f}" for k in kinds) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "zhaopian-bench")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    report = run(args.cache_dir)
    print(f"{report['queries']} labelled demo queries: {report['kinds']}")
    print(markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
