"""What the reranker stage adds: latency per top-N for the built-in and the (tiny) VLM reranker, and what
the built-in one changes on the demo's labelled queries.

    python bench/rerank.py                          # ~8 min on 2 busy cores (the demo build is cached)
    python bench/rerank.py --quick                  # ~3 min: visual module only, top-N 5 and 10
    python bench/rerank.py --json rerank.json

The bundled demo (``zhaopian.indexer.demo``) is indexed once with every offline module (as
``bench/routes.py`` does) and its 41 labelled queries run through the library:

* **quality**: without a reranker, then with the built-in one (``top_n`` 20, no budget limit),
  scored by the demo's ground truth: R@1, R@5 and MRR (a result is right when it is the labelled
  medium and overlaps the labelled span), and, since the reranker also fits spans, the temporal
  IoU of the first result with the labelled span (mean, and the share of queries with IoU >= 0.5,
  "R1@0.5" as in moment retrieval), P@5 (right results among the first five: the demo labels up to
  two right spans per query); plus how much the order moved (queries whose first five
  results changed order, Kendall's tau between the fused and the reranked order of the top N);
* **latency** of the stage alone (the engine's ``timings_ms["rerank"]``) for top-N 5, 10 and 20:
  *cold*: every cache emptied before each query (a new library stage), on a few queries;
  *session*: the 41 queries one after another, caches kept (frames seen for one query serve the
  next, as in an editor's session); *repeat*: the same queries again (judgements from the cache).
  Also the session again from empty caches under the default budget (built-in 3 s, VLM 60 s):
  the longest stage time, how many queries fell back to the fused order, and which query was
  the first to be reranked.
* the same latency figures for the **VLM reranker with a tiny random-weight Qwen2-VL**
  (tests/tiny_vlm.py, real processor), on 10 of the text queries (it judges no image queries
  and keeps no frames between queries): the cost of sampling, decoding, resizing and
  pre-processing around the model, not of a real model's forward pass, which cannot be
  downloaded here.

Times depend on what else runs on the machine: every figure comes with the CPU that other
processes used meanwhile (``others``, in cores; bench/machine.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from machine import Clock, machine_info  # bench/machine.py

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from zhaopian.api.service import Service
from zhaopian.api.settings import Settings
from zhaopian.indexer.demo import LabelledQuery, build_demo, load_queries, query_image_path
from zhaopian.indexer.ingest import MEDIA_SUFFIXES
from zhaopian.search.rerank import RerankConfig, stage_for

TOP_K = 10
LIBRARY = "bench"


def iou(q: LabelledQuery, video: str, start: float, end: float) -> float:
    """Temporal IoU of a result with the labelled span (or an equally right span); a still: 1 if it holds it."""
    best = 0.0
    for name, a, b in [(q.video, q.start, q.end), *q.also]:
        if Path(video).name != name:
            continue
        if a == b:
            best = max(best, 1.0 if start <= a <= end else 0.0)
            continue
        union = max(b, end) - min(a, start)
        best = max(best, max(0.0, min(b, end) - max(a, start)) / union if union > 0 else 0.0)
    return best


def kendall_tau(before: list, after: list) -> float:
    """Kendall's tau between two orders of the same items (1: unchanged)."""
    pos = {item: i for i, item in enumerate(after)}
    items = [x for x in before if x in pos]
    n = len(items)
    if n < 2:
        return 1.0
    concordant = sum(1 if pos[items[i]] < pos[items[j]] else -1 for i in range(n) for j in range(i + 1, n))
    return concordant / (n * (n - 1) / 2)


def ask(svc: Service, demo_dir: Path, q: LabelledQuery, rerank: bool, top_k: int = TOP_K):
    if q.kind == "image":
        return svc.search_report(image=query_image_path(demo_dir, q), library=LIBRARY, top_k=top_k, rerank=rerank)
    return svc.search_report(q.query, library=LIBRARY, top_k=top_k, rerank=rerank)


def scores(rows: list[dict]) -> dict:
    n = len(rows) or 1
    ranks = [r["rank"] for r in rows]
    return {"R@1": sum(r == 1 for r in ranks) / n, "R@5": sum(r is not None and r <= 5 for r in ranks) / n,
            "MRR": sum(1 / r for r in ranks if r) / n, "mIoU@1": sum(r["iou"] for r in rows) / n,
            "R1@0.5": sum(r["iou"] >= 0.5 for r in rows) / n, "P@5": sum(r["hits5"] for r in rows) / (5 * n),
            "n": len(rows)}


def evaluate(svc: Service, demo_dir: Path, queries: list[LabelledQuery], rerank: bool, top_k: int) -> list[dict]:
    rows = []
    for q in queries:
        response = ask(svc, demo_dir, q, rerank, top_k)
        results = response.results
        rank = next((i for i, r in enumerate(results, 1) if q.is_hit(r.video, r.start, r.end)), None)
        rows.append({"id": q.id, "about": q.about if q.kind == "text" else "image", "rank": rank,
                     "hits5": sum(q.is_hit(r.video, r.start, r.end) for r in results[:5]),
                     "iou": iou(q, results[0].video, results[0].start, results[0].end) if results else 0.0,
                     "order": [(r.media_id, *(r.routes.get(k) for k in ("visual", "ocr", "asr", "labels", "meta")))
                               for r in results],
                     "ms": response.timings_ms.get("rerank"), "notes": response.notes})
    return rows


def order_change(fused: list[dict], reranked: list[dict]) -> dict:
    """How far the reranker moved results: a result is identified by its medium and its routes' own scores."""
    changed5 = sum(a["order"][:5] != b["order"][:5] for a, b in zip(fused, reranked))
    taus = [kendall_tau(a["order"], b["order"]) for a, b in zip(fused, reranked)]
    top1 = sum(a["order"][:1] != b["order"][:1] for a, b in zip(fused, reranked))
    return {"queries": len(fused), "top5_order_changed": changed5, "top1_changed": top1,
            "kendall_tau_mean": statistics.fmean(taus) if taus else 1.0}


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)

    def pick(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    return {"p50": round(pick(0.5), 1), "p95": round(pick(0.95), 1), "max": round(ordered[-1], 1),
            "mean": round(statistics.fmean(ordered), 1), "n": len(ordered)}


def latency(svc: Service, demo_dir: Path, queries: list[LabelledQuery], config: RerankConfig, cold_queries: int,
            default_budget_ms: float) -> dict:
    """Cold (fresh stage per query), session (caches kept) and repeat (judgement cache) rerank times, ms."""
    lib = svc.library(LIBRARY)
    out: dict = {}
    cold = []
    with Clock() as clock:
        for q in queries[:cold_queries]:
            lib.config.rerank = config.model_copy()  # a new config object: a new stage, empty caches
            cold.append(ask(svc, demo_dir, q, True).timings_ms["rerank"])
    out["cold"] = {**percentiles(cold), "others_cores": clock.others_cores}
    lib.config.rerank = config.model_copy()
    with Clock() as clock:
        session = [ask(svc, demo_dir, q, True) for q in queries]
    out["session"] = {**percentiles([r.timings_ms["rerank"] for r in session]), "others_cores": clock.others_cores}
    out["session_first_query_ms"] = round(session[0].timings_ms["rerank"], 1)
    out["session_over_default_budget"] = sum(r.timings_ms["rerank"] > default_budget_ms for r in session)
    out["fallbacks"] = sum(bool(r.notes) for r in session)
    with Clock() as clock:
        repeat = [ask(svc, demo_dir, q, True).timings_ms["rerank"] for q in queries]
    out["repeat"] = {**percentiles(repeat), "others_cores": clock.others_cores}
    stage = stage_for(lib)
    if hasattr(stage.reranker(), "stats"):
        out["frame_cache"] = stage.reranker().stats()
    # the same session from empty caches under the backend's default budget: what a user sees
    lib.config.rerank = config.model_copy(update={"budget_ms": None})
    with Clock() as clock:
        budgeted = [ask(svc, demo_dir, q, True) for q in queries]
    times = [r.timings_ms["rerank"] for r in budgeted]
    out["default_budget"] = {"budget_ms": default_budget_ms, "max_ms": round(max(times), 1),
                             "fell_back": sum(any("budget" in n for n in r.notes) for r in budgeted),
                             "first_reranked": next((i + 1 for i, r in enumerate(budgeted) if not r.notes), None),
                             "n": len(budgeted), "others_cores": clock.others_cores}
    return out


def run(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    demo_dir = build_demo(args.cache_dir / "demo")
    modules = args.modules.split(",")
    top_ns = [int(n) for n in args.top_n.split(",")]
    report: dict = {"machine": machine_info(), "torch_threads": args.threads, "modules": modules, "top_n": top_ns}
    with tempfile.TemporaryDirectory() as data:
        svc = Service(Settings(data_dir=data, media_root=demo_dir, threads=args.threads))
        svc.create_library(LIBRARY, svc.default_config(modules=modules))
        files = sorted(p for p in demo_dir.iterdir() if p.suffix.lower() in MEDIA_SUFFIXES)
        t0 = time.perf_counter()
        indexed = svc.index(files, LIBRARY)
        assert all(r.status != "failed" for r in indexed), [r.message for r in indexed if r.status == "failed"]
        report["index_s"] = round(time.perf_counter() - t0, 1)
        queries = load_queries(demo_dir)
        report["queries"] = len(queries)
        print(f"indexed the demo in {report['index_s']} s; {len(queries)} labelled queries", flush=True)

        # quality: the fused order, then the built-in reranker over the top 20 with no time limit
        fused = evaluate(svc, demo_dir, queries, False, TOP_K)
        lib = svc.library(LIBRARY)
        lib.config.rerank = RerankConfig(backend="builtin", top_n=max(top_ns), budget_ms=600_000)
        reranked = evaluate(svc, demo_dir, queries, True, TOP_K)
        report["quality"] = {"fused": scores(fused), "builtin": scores(reranked),
                             "per_kind": {kind: {"fused": scores([r for r in fused if r["about"] == kind]),
                                                 "builtin": scores([r for r in reranked if r["about"] == kind])}
                                          for kind in sorted({r["about"] for r in fused})},
                             "order": order_change(fused, reranked), "top_n": max(top_ns)}
        report["quality_rows"] = {"fused": fused, "builtin": reranked}
        print(json.dumps({k: report["quality"][k] for k in ("fused", "builtin", "order")}), flush=True)

        # latency per top-N: built-in reranker
        report["latency"] = {"builtin": {}, "vlm-tiny": {}}
        for n in top_ns:
            config = RerankConfig(backend="builtin", top_n=n, budget_ms=600_000)
            report["latency"]["builtin"][n] = latency(svc, demo_dir, queries, config, args.cold, 3000.0)
            print(f"builtin top {n}: {json.dumps(report['latency']['builtin'][n])}", flush=True)

        # latency per top-N: the VLM path with a tiny random Qwen2-VL (pre-processing cost, not a real model's)
        from tiny_vlm import make_tiny_qwen_vl

        model = make_tiny_qwen_vl(Path(data) / "tiny-qwen2-vl", "qwen2_vl")
        texts = [q for q in queries if q.kind == "text"]
        texts = [texts[round(i * len(texts) / args.vlm_queries)] for i in range(min(args.vlm_queries, len(texts)))]
        for n in top_ns:
            config = RerankConfig(backend="vlm", top_n=n, budget_ms=600_000,
                                  options={"model": str(model), "batch_size": 4})
            report["latency"]["vlm-tiny"][n] = latency(svc, demo_dir, texts, config, args.cold, 60_000.0)
            print(f"vlm-tiny top {n}: {json.dumps(report['latency']['vlm-tiny'][n])}", flush=True)
        svc.close()
    return report


def markdown(report: dict) -> str:
    q = report["quality"]
    lines = [(f"Quality on the {report['queries']} demo queries (modules: {', '.join(report['modules'])}; "
              f"built-in reranker over the top {q['top_n']}):"), "",
             "| order | R@1 | R@5 | MRR | P@5 | mIoU@1 | R1@0.5 |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name in ("fused", "builtin"):
        s = q[name]
        lines.append(f"| {name} | {s['R@1']:.2f} | {s['R@5']:.2f} | {s['MRR']:.2f} | {s['P@5']:.2f} | "
                     f"{s['mIoU@1']:.2f} | {s['R1@0.5']:.2f} |")
    o = q["order"]
    lines += ["", (f"Order moved: first result changed in {o['top1_changed']} of {o['queries']} queries, first five "
                   f"in {o['top5_order_changed']}; mean Kendall tau fused vs reranked (top {TOP_K}) "
                   f"{o['kendall_tau_mean']:.2f}."),
              "", "| kind | n | R@1 fused | R@1 builtin | mIoU@1 fused | mIoU@1 builtin |", "|---|---:|---:|---:|---:|---:|"]
    for kind, row in q["per_kind"].items():
        lines.append(f"| {kind} | {row['fused']['n']} | {row['fused']['R@1']:.2f} | {row['builtin']['R@1']:.2f} | "
                     f"{row['fused']['mIoU@1']:.2f} | {row['builtin']['mIoU@1']:.2f} |")
    lines += ["", "Stage latency, ms (`timings_ms[\"rerank\"]`):", "",
              ("| reranker | top N | cold p50 | cold max | session p50 | session p95 | session max | repeat p50 | "
               "over default budget | others (cores) |"), "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rows = []
    for backend, per_n in report["latency"].items():
        for n, f in per_n.items():
            b = f["default_budget"]
            rows.append(f"| {backend} | {n} | {b['budget_ms']:.0f} | {b['max_ms']} | {b['fell_back']}/{b['n']} | "
                        f"{b['first_reranked']} | {b['others_cores']} |")
    budget_lines = ["", "Under the default budget, from empty caches (the same session):", "",
                    "| reranker | top N | budget ms | longest stage ms | fell back | first reranked query | others |",
                    "|---|---:|---:|---:|---:|---:|---:|", *rows]
    for backend, per_n in report["latency"].items():
        for n, f in per_n.items():
            lines.append(f"| {backend} | {n} | {f['cold']['p50']} | {f['cold']['max']} | {f['session']['p50']} | "
                         f"{f['session']['p95']} | {f['session']['max']} | {f['repeat']['p50']} | "
                         f"{f['session_over_default_budget']}/{f['session']['n']} | "
                         f"{f['cold']['others_cores']}-{f['session']['others_cores']} |")
    return "\n".join(lines + budget_lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "zhaopian-bench")
    parser.add_argument("--modules", default="visual,labels,ocr,asr,meta")
    parser.add_argument("--top-n", default="5,10,20")
    parser.add_argument("--cold", type=int, default=2, help="queries measured with empty caches, per top-N")
    parser.add_argument("--vlm-queries", type=int, default=10, help="text queries for the tiny-VLM latency")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="visual module only, top-N 5 and 10, 2 cold queries")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    if args.quick:
        args.modules, args.top_n, args.cold, args.vlm_queries = "visual", "5,10", 1, 5
    started = time.perf_counter()
    report = run(args)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    print(markdown(report))
    print(f"\n{report['wall_s']} s in all; machine: {json.dumps(report['machine'])}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
