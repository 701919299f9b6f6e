"""The ``meta`` module: a medium's title, description, tags, file name and custom fields."""

from .module import MetaModule

__all__ = ["MetaModule"]
