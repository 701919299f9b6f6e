"""Faces: who is on screen, found by a face photo or a registered person's name (the ``faces`` module)."""

from .module import FacesConfig, FacesModule

__all__ = ["FacesConfig", "FacesModule"]
