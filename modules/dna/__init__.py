"""The ``dna`` module: near-duplicate and partial-copy detection by video fingerprints."""

from .module import DnaConfig, DnaModule

__all__ = ["DnaConfig", "DnaModule"]
