from __future__ import annotations

from pathlib import Path

import pytest

from media import BLUE, GREEN, RED, YELLOW, write_image, write_video
from zhaopian.api.service import Service
from zhaopian.api.settings import Settings

COLOR_ENCODER = {"backend": "color_encoder:ColorEncoder"}
COLOR_LIBRARY = {"modules": {"visual": {"encoder": COLOR_ENCODER}}}


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory):
    """Models assembled at run time (the bundled Whisper) go to one temporary folder per test session."""
    import os

    saved = os.environ.get("ZHAOPIAN_CACHE_DIR")
    os.environ["ZHAOPIAN_CACHE_DIR"] = str(tmp_path_factory.mktemp("model-cache"))
    yield
    if saved is None:
        os.environ.pop("ZHAOPIAN_CACHE_DIR", None)
    else:
        os.environ["ZHAOPIAN_CACHE_DIR"] = saved


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small models gain nothing from threads, and spinning threads crawl on a busy 2-core machine;
    torch's process-wide setting is put back afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def media_root(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    return root


@pytest.fixture
def env(tmp_path: Path, media_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the product at a temporary data dir and media root (for the service and the CLI)."""
    data = tmp_path / "data"
    monkeypatch.setenv("ZHAOPIAN_DATA_DIR", str(data))
    monkeypatch.setenv("ZHAOPIAN_MEDIA_ROOT", str(media_root))
    # the tests' colour encoder is named by import path, also through the API (off by default: see
    # test_http_api.py::test_api_callers_cannot_name_import_paths)
    monkeypatch.setenv("ZHAOPIAN_API_IMPORT_PATHS", "1")
    return data


@pytest.fixture
def service(env: Path):
    svc = Service(Settings())
    yield svc
    svc.close()


@pytest.fixture
def colour_videos(media_root: Path) -> dict[str, Path]:
    """Two videos with known spans: a.mp4 red 0-3, green 3-6, blue 6-10; b.mp4 yellow 0-2, red 2-4; one image."""
    return {
        "a": write_video(media_root / "a.mp4", [(RED, 3), (GREEN, 3), (BLUE, 4)]),
        "b": write_video(media_root / "b.mp4", [(YELLOW, 2), (RED, 2)]),
        "img": write_image(media_root / "still.png", GREEN),
    }


@pytest.fixture
def colour_library(service: Service, colour_videos) -> str:
    service.create_library("colours", COLOR_LIBRARY)
    results = service.index(list(colour_videos.values()), library="colours")
    assert [r.status for r in results] == ["indexed"] * 3
    return "colours"
