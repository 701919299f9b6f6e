"""Where an encoder's weights come from: a local directory or a model hub id.

A local directory is used as is and never touches the network. Anything else
is a model hub id, fetched by the library's own hub code into its cache. A
model that is already cached is loaded without asking the hub first, so a
machine that downloaded it once keeps working offline (and a silently updated
upstream model cannot change the embedding space of an existing index).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from zhaopian.search.errors import ConfigError, ModelUnavailable

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

_PATH_PREFIXES = ("/", "./", "../", "~", "\\")


def looks_like_path(value: str) -> bool:
    """A filesystem path rather than a hub id or a name (hub ids never start like a path)."""
    return value.startswith(_PATH_PREFIXES) or Path(value).expanduser().exists()


@dataclass(frozen=True)
class ModelSource:
    """A resolved ``model`` setting: ``ref`` is a directory path (``local``) or a hub id."""

    ref: str
    local: bool


def resolve(model: str) -> ModelSource:
    """An existing directory is local; a path-like string that does not exist is an error; else a hub id."""
    path = Path(model).expanduser()
    if path.is_dir():
        return ModelSource(str(path.resolve()), local=True)
    if looks_like_path(model):
        raise ModelUnavailable(f"model directory {model} does not exist (or is not a directory); "
                               f"point model to a directory holding the downloaded model, or give a model hub id")
    return ModelSource(model, local=False)


def fetch_failed(model_id: str) -> ModelUnavailable:
    return ModelUnavailable(f"could not fetch {model_id} from the model hub (offline?); "
                            f"download it on a machine with internet or point model to a local directory")


@contextmanager
def loading(source: ModelSource, what: str = "model") -> Iterator[None]:
    """Turn any failure of a library's loader into a one-line ``ModelUnavailable`` (cause chained)."""
    try:
        yield
    except ModelUnavailable:
        raise
    except Exception as exc:
        if source.local:
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelUnavailable(f"could not load {what} from {source.ref}: {first_line}") from exc
        raise fetch_failed(source.ref) from exc


def from_pretrained(load: Callable[..., T], source: ModelSource, what: str = "model", **kwargs: object) -> T:
    """Call a transformers-style ``from_pretrained``: the local directory, else the hub cache, else the hub."""
    if not source.local:
        try:
            return load(source.ref, local_files_only=True, **kwargs)
        except Exception:  # not cached (or incompletely): ask the hub below
            pass
    with loading(source, what):
        return load(source.ref, **kwargs)


def torch_device(name: str) -> torch.device:
    """The configured torch device, checked before any weights are loaded."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r}; use cpu, cuda, cuda:<n> or mps") from exc
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(device.type, False):
        raise ConfigError(f"device {name!r} is not available on this machine; use device: cpu")
    return device
