"""Labelled query sets, their formats and the scores `zhaopian eval` prints."""

import json
import math

import pytest
from typer.testing import CliRunner

from zhaopian.api.cli import app
from zhaopian.search.errors import ConfigError
from zhaopian.search.evaluate import EvalQuery, Found, evaluate, load_queries, rank_of, scores


def test_a_hit_is_the_labelled_video_overlapping_the_span():
    q = EvalQuery(id="1", query="x", video="a.mp4", start=4, end=8, also=[("b.mp4", 0, 2)])
    assert q.is_hit("/media/a.mp4", 7, 12) and not q.is_hit("/media/a.mp4", 8, 12)
    assert q.is_hit("b.mp4", 1, 1.5) and not q.is_hit("c.mp4", 4, 8)
    still = EvalQuery(id="2", query="x", video="s.jpg", start=0, end=0)
    assert still.is_hit("s.jpg", 0, 0)
    whole = EvalQuery(id="3", query="x", video="v.mp4")
    assert whole.end == math.inf and whole.is_hit("v.mp4", 100, 101)
    found = [Found(video="x.mp4", start=0, end=1), Found(video="a.mp4", start=5, end=6)]
    assert rank_of(found, q) == 2 and rank_of(found[:1], q) is None


def test_scores():
    s = scores([1, 3, None, 12], [10, 20, 30, 40])
    assert s.recall == {"R@1": 0.25, "R@5": 0.5, "R@10": 0.5}
    assert s.mrr == pytest.approx((1 + 1 / 3 + 1 / 12) / 4)
    assert s.latency_ms_p50 == 25 and s.latency_ms_p95 == 40


def test_jsonl_and_msrvtt_formats(tmp_path):
    lines = [{"id": "t", "kind": "text", "lang": "zh", "query": "一只猫", "video": "cat.mp4", "start": 1, "end": 3},
             {"id": "i", "kind": "image", "query": "queries/cup.jpg", "video": "cup.mp4", "about": "visual"}]
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n\n")
    text, image = load_queries(path)
    assert text.group == "text:zh:visual" and image.group == "image:visual"
    assert image.query == str(tmp_path / "queries" / "cup.jpg")

    info = {"videos": [{"video_id": "video7010", "split": "test"}, {"video_id": "video1", "split": "train"}],
            "sentences": [{"caption": "a man is singing", "video_id": "video7010", "sen_id": 5},
                          {"caption": "train only", "video_id": "video1", "sen_id": 6}]}
    (tmp_path / "test_videodatainfo.json").write_text(json.dumps(info))
    [q] = load_queries(tmp_path / "test_videodatainfo.json")
    assert (q.query, q.video, q.start, q.end) == ("a man is singing", "video7010.mp4", 0.0, math.inf)

    (tmp_path / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\nret0,msr9770,video9770,a person is connecting a cable\n")
    [q] = load_queries(tmp_path / "MSRVTT_JSFUSION_test.csv")
    assert q.video == "video9770.mp4" and q.lang == "en"

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n')
    with pytest.raises(ConfigError, match="bad.jsonl:1"):
        load_queries(bad)
    with pytest.raises(ConfigError, match="no such query file"):
        load_queries(tmp_path / "missing.jsonl")


def test_evaluate_groups_by_kind():
    queries = [EvalQuery(id="a", query="red", video="a.mp4"), EvalQuery(id="b", kind="image", query="q.png",
                                                                        video="b.mp4")]
    report = evaluate(queries, lambda q, k: [Found(video="a.mp4", start=0, end=1)])
    assert report.ranks == {"a": 1, "b": None}
    assert set(report.groups) == {"all", "text:visual", "image:visual"}
    assert report.groups["all"].recall["R@1"] == 0.5 and report.groups["text:visual"].mrr == 1.0


def test_eval_command_on_a_library(cli_env_library, tmp_path):
    path = tmp_path / "colours.jsonl"
    rows = [{"id": "red", "query": "red", "video": "b.mp4", "start": 2, "end": 4},
            {"id": "blue", "query": "blue", "video": "a.mp4", "start": 6, "end": 10},
            {"id": "img", "kind": "image", "query": "q.png", "video": "a.mp4", "start": 6, "end": 10}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    from media import write_image

    write_image(tmp_path / "q.png", (30, 20, 230))
    runner = CliRunner()
    result = runner.invoke(app, ["eval", str(path), "--library", cli_env_library, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ranks"] == {"red": 1, "blue": 1, "img": 1}
    assert report["groups"]["all"]["recall"]["R@1"] == 1.0
    table = runner.invoke(app, ["eval", str(path), "--library", cli_env_library])
    assert "R@10" in table.stdout and "image:visual" in table.stdout
    missing = runner.invoke(app, ["eval", str(path), "--library", "nope"])
    assert missing.exit_code == 1 and missing.stderr.startswith("error[not_found]")
    assert runner.invoke(app, ["eval"]).stderr.startswith("error[config_invalid]")


@pytest.fixture
def cli_env_library(env, colour_videos):
    runner = CliRunner()
    assert runner.invoke(app, ["library", "create", "ev", "--encoder", "color_encoder:ColorEncoder",
                               "--modules", "visual"]).exit_code == 0
    assert runner.invoke(app, ["index", *map(str, colour_videos.values()), "--library", "ev"]).exit_code == 0
    return "ev"
