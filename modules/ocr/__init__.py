"""On-screen text (the ``ocr`` module)."""

from .module import OcrModule

__all__ = ["OcrModule"]
