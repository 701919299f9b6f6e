from .module import VisualConfig, VisualModule

__all__ = ["VisualConfig", "VisualModule"]
