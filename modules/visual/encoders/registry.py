"""Encoder registry: a backend name (or dotted path) in a library's config -> an Encoder.

Backends are imported lazily so that choosing the bundled encoder never
imports transformers or open_clip. Loaded encoders are shared per process:
two libraries with the same encoder config use one set of weights.
"""

from __future__ import annotations

import importlib
import threading

from zhaopian.search.errors import ConfigError

from .backends import BACKENDS
from .base import Encoder, EncoderConfig

__all__ = ["BACKENDS", "create_encoder", "encoder_class"]

_cache: dict[str, Encoder] = {}
_cache_lock = threading.Lock()


def encoder_class(backend: str) -> type[Encoder]:
    target = BACKENDS.get(backend, backend)
    module_name, sep, attr = target.partition(":")
    if not sep:
        raise ConfigError(f"unknown encoder backend {backend!r}; choose one of {', '.join(BACKENDS)} or give 'package.module:Class'")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise ConfigError(f"encoder backend {backend!r} needs a package that is not installed ({exc.name}); "
                          f"install the matching extra, e.g. pip install 'zhaopian[clip,onnx]'") from exc
    except AttributeError as exc:
        raise ConfigError(f"encoder backend {backend!r}: {module_name} has no {attr}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Encoder)):
        raise ConfigError(f"encoder backend {backend!r} is not an Encoder subclass")
    return cls


def create_encoder(config: EncoderConfig) -> Encoder:
    """A shared (per process) encoder for this config; weights load on first use."""
    key = config.model_dump_json()
    with _cache_lock:
        if key not in _cache:
            _cache[key] = encoder_class(config.backend)(config)
        return _cache[key]
