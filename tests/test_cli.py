"""The zhaopian command line, run in-process with typer's runner."""

import json

import pytest
from typer.testing import CliRunner

from zhaopian.api.cli import app

runner = CliRunner()


def zp(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def cli_library(env, colour_videos):
    r = zp("library", "create", "clips", "--encoder", "color_encoder:ColorEncoder")
    assert r.exit_code == 0, r.output
    r = zp("index", *colour_videos.values(), "--library", "clips")
    assert r.exit_code == 0, r.output
    return "clips"


def test_library_lifecycle(env):
    assert zp("library", "create", "films", "--encoder", "color_encoder:ColorEncoder", "--index", "sq8").exit_code == 0
    listing = zp("library", "list", "--json")
    [lib] = json.loads(listing.stdout)
    assert lib["name"] == "films" and lib["config"]["vector_store"]["index"] == "sq8"
    again = zp("library", "create", "films")
    assert again.exit_code == 1 and "error[already_exists]" in again.stderr
    assert zp("library", "delete", "films", "--yes").exit_code == 0
    assert json.loads(zp("library", "list", "--json").stdout) == []


def test_index_and_search_json(cli_library):
    r = zp("search", "red", "--library", cli_library, "--top-k", "2", "--json")
    assert r.exit_code == 0, r.output
    results = json.loads(r.stdout)["results"]
    assert [(x["video"].rsplit("/", 1)[-1], x["start"], x["end"]) for x in results] == [("b.mp4", 2.0, 4.0),
                                                                                         ("a.mp4", 0.0, 3.0)]
    assert set(results[0]) >= {"video", "start", "end", "score", "thumbnail_time", "routes", "media_id"}
    table = zp("search", "blue", "--library", cli_library, "--top-k", "1")
    assert "a.mp4" in table.stdout and "00:06.00" in table.stdout and "00:10.00" in table.stdout


def test_image_search(cli_library, media_root):
    from media import write_image

    query = write_image(media_root / "q.png", (30, 20, 230))
    r = zp("search", "--image", query, "--library", cli_library, "--json", "-k", "1")
    assert json.loads(r.stdout)["results"][0]["start"] == 6.0


def test_reindex_is_noop_and_delete_removes(cli_library, colour_videos):
    r = zp("index", colour_videos["a"], "--library", cli_library)
    assert r.exit_code == 0 and "unchanged:" in r.stdout
    media = json.loads(zp("media", "list", "--library", cli_library, "--json").stdout)
    assert len(media) == 3
    b = next(m for m in media if m["path"].endswith("b.mp4"))
    shown = json.loads(zp("media", "show", b["id"], "--library", cli_library).stdout)
    assert shown["sha256"] == b["sha256"]
    assert zp("media", "update", b["id"], "--library", cli_library, "--tags", "红色,intro").exit_code == 0
    assert zp("media", "delete", b["id"], "--library", cli_library).exit_code == 0
    results = json.loads(zp("search", "red", "--library", cli_library, "--json").stdout)["results"]
    assert all(not x["video"].endswith("b.mp4") for x in results)


def test_errors_are_one_line_with_nonzero_exit(cli_library, media_root, tmp_path):
    bad = media_root / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    good = media_root / "new.png"
    from media import write_image

    write_image(good, (250, 250, 250))
    r = zp("index", bad, good, "--library", cli_library)
    assert r.exit_code == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error[media_invalid]: ")
    assert "indexed:" in r.stdout and "1 of 2 files ok" in r.stdout

    cases = [
        (("search", "", "--library", cli_library), "error[query_invalid]: empty query"),
        (("search", "red", "--library", "nope"), "error[not_found]: unknown library 'nope'"),
        (("search", "--image", media_root / "none.png", "--library", cli_library), "error[media_invalid]"),
        (("media", "show", "999", "--library", cli_library), "error[not_found]: unknown medium 999"),
        (("index", tmp_path / "elsewhere.mp4", "--library", cli_library), "error[path_outside_media_root]"),
        (("library", "create", "bad name!"), "error[config_invalid]"),
        (("library", "create", "x", "--encoder", "no-such-backend"), "error[config_invalid]"),
    ]
    for args, message in cases:
        r = zp(*args)
        assert r.exit_code == 1, args
        assert r.stderr.startswith(message), (args, r.stderr)
        assert r.stderr.count("\n") == 1, r.stderr


def test_clip_path_is_one_config_line_away(env, colour_videos, tmp_path, one_torch_thread):
    """A library on a Chinese-CLIP model directory, and on its ONNX int8 export, indexes and searches."""
    from tiny_models import make_tiny_chinese_clip

    model_dir = make_tiny_chinese_clip(tmp_path / "cn-clip")
    assert zp("library", "create", "cn", "--encoder", f"chinese-clip:{model_dir}").exit_code == 0
    onnx_dir = tmp_path / "cn-clip-int8"
    exported = zp("encoder", "export-onnx", f"chinese-clip:{model_dir}", onnx_dir)
    assert exported.exit_code == 0, exported.output
    assert zp("library", "create", "cn-onnx", "--encoder", f"onnx:{onnx_dir}").exit_code == 0
    for library in ("cn", "cn-onnx"):
        assert zp("index", *colour_videos.values(), "--library", library).exit_code == 0
        results = json.loads(zp("search", "一只猫", "--library", library, "--json").stdout)["results"]
        assert results and {r["video"].rsplit("/", 1)[-1] for r in results} <= {"a.mp4", "b.mp4", "still.png"}
        image = json.loads(zp("search", "--image", colour_videos["img"], "--library", library, "--json", "-k", "1")
                           .stdout)["results"]
        assert image[0]["video"].endswith("still.png")  # an image finds itself in any joint space


def test_queue_then_worker_then_jobs(env, colour_videos, media_root):
    assert zp("library", "create", "q", "--encoder", "color_encoder:ColorEncoder", "--modules", "visual").exit_code == 0
    bad = media_root / "bad.mp4"
    bad.write_bytes(b"\0" * 10)
    queued = zp("index", colour_videos["a"], bad, "--library", "q", "--queue")
    assert queued.exit_code == 0 and queued.stdout.count("queued") == 2
    listing = json.loads(zp("jobs", "list", "--json").stdout)
    assert listing["total"] == 2 and {j["status"] for j in listing["items"]} == {"queued"}
    first = min(j["id"] for j in listing["items"])
    assert "cancelled" in zp("jobs", "cancel", first).stdout
    assert zp("jobs", "cancel", first).stderr.startswith("error[job_conflict]")
    assert "queued" in zp("jobs", "retry", first).stdout
    assert zp("worker", "--drain").exit_code == 0
    jobs = {j["path"].rsplit("/", 1)[-1]: j for j in json.loads(zp("jobs", "list", "--json").stdout)["items"]}
    assert jobs["a.mp4"]["status"] == "done" and jobs["bad.mp4"]["error"]["code"] == "media_invalid"
    shown = json.loads(zp("jobs", "show", jobs["a.mp4"]["id"]).stdout)
    assert shown["modules"] == {"decode": 1.0, "visual": 1.0}
    table = zp("jobs", "list", "--library", "q", "--status", "failed")
    assert "bad.mp4" in table.stdout and "a.mp4" not in table.stdout
    assert zp("jobs", "show", 999).stderr.startswith("error[not_found]")
    assert zp("search", "red", "--library", "q", "--json").exit_code == 0
