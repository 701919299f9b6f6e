"""Speech: what is said in a medium, transcribed by Whisper into time-stamped sentences (the ``asr`` module)."""

from .module import AsrModule

__all__ = ["AsrModule"]
