"""Modules are discovered through the ``zhaopian.modules`` entry-point group."""

import sys
import textwrap

import pytest

from zhaopian.modules.base import Module
from zhaopian.modules.manager import ModuleManager
from zhaopian.modules.visual import VisualModule
from zhaopian.search.engine import search
from zhaopian.search.errors import ConfigError
from zhaopian.search.types import Query

PLUGIN = '''
from zhaopian.modules.base import Module, ModuleConfig
from zhaopian.search.types import Segment, Hit

class EchoConfig(ModuleConfig):
    boost: float = 1.0

class EchoModule(Module):
    """A third-party module: every text query matches medium 1 at 0-1 s."""
    name = "echo"
    Config = EchoConfig
    def extract(self, media, frames): return len(frames)
    def write(self, media, features): return 0
    def remove(self, media_ids): pass
    def flush(self): pass
    def rewrite(self, query): return query.text
    def recall(self, q, k): return [Hit(1, 0.0, 1.0, self.config.boost, 0.0)]
    def aggregate(self, hits, q): return [Segment(media_id=h.media_id, start=h.start, end=h.end,
                                                  score=h.score, thumbnail_time=0, routes={"echo": h.score}) for h in hits]
'''


@pytest.fixture
def plugin_on_path(tmp_path, monkeypatch):
    """Install a plug-in package the way pip would: code plus a dist-info with entry_points.txt."""
    (tmp_path / "zp_echo.py").write_text(PLUGIN)
    dist = tmp_path / "zp_echo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: zp-echo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""
        [zhaopian.modules]
        echo = zp_echo:EchoModule
        broken = zp_echo:EchoConfig
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("zp_echo", None)


def test_builtin_visual_module_is_registered():
    manager = ModuleManager()
    assert "visual" in manager.available()
    assert manager.module_class("visual") is VisualModule


def test_third_party_module_is_discovered_and_configured(plugin_on_path):
    manager = ModuleManager()
    assert {"echo", "visual"} <= set(manager.available())
    cls = manager.module_class("echo")
    assert issubclass(cls, Module) and cls.name == "echo"
    assert manager.validate("echo", {"boost": 2}).boost == 2.0


def test_third_party_module_runs_in_search(plugin_on_path, service):
    service.manager = ModuleManager()
    service.create_library("plug", {"modules": {"echo": {"boost": 3.0}}})
    report = search(service.library("plug"), Query(text="anything"))
    assert [(s.media_id, s.score, s.routes) for s in report.segments] == [(1, 3.0, {"echo": 3.0})]


def test_bad_modules_and_options_are_refused(plugin_on_path):
    manager = ModuleManager()
    with pytest.raises(ConfigError, match="unknown module 'nope'"):
        manager.module_class("nope")
    with pytest.raises(ConfigError, match="not a zhaopian Module"):
        manager.module_class("broken")
    with pytest.raises(ConfigError, match="boost"):
        manager.validate("echo", {"boost": "lots"})
    with pytest.raises(ConfigError, match="colour"):
        manager.validate("echo", {"colour": 1})
