"""The ``labels`` module: objects and scenes per frame from the shipped ImageNet classifier."""

from .module import LabelsModule

__all__ = ["LabelsModule"]
