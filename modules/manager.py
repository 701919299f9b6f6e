"""The module manager: discovers modules through entry points and builds them per library."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import ValidationError

from zhaopian.search.errors import ConfigError

from .base import Module, ModuleConfig, ModuleContext

GROUP = "zhaopian.modules"


class ModuleManager:
    def __init__(self, group: str = GROUP) -> None:
        self.group = group
        self._entry_points: dict[str, EntryPoint] = {ep.name: ep for ep in entry_points(group=group)}
        self._classes: dict[str, type[Module]] = {}

    def available(self) -> list[str]:
        return sorted(self._entry_points)

    def module_class(self, name: str) -> type[Module]:
        if name not in self._classes:
            ep = self._entry_points.get(name)
            if ep is None:
                raise ConfigError(f"unknown module {name!r}; installed modules: {', '.join(self.available()) or 'none'}")
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Module)):
                raise ConfigError(f"entry point {name!r} ({ep.value}) is not a zhaopian Module")
            self._classes[name] = cls
        return self._classes[name]

    def validate(self, name: str, options: dict[str, Any] | None) -> ModuleConfig:
        cls = self.module_class(name)
        try:
            return cls.Config.model_validate(options or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"module {name!r}: {where}: {first['msg']}") from exc

    def create(self, name: str, options: dict[str, Any] | None, context: ModuleContext) -> Module:
        return self.module_class(name)(self.validate(name, options), context)
