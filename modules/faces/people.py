"""Named people of a library, for the CLI and the HTTP API: register from photos, list, remove.

A person is stored with the descriptors of the faces in their photos (modules/faces/store.py), in
the library's own ``media.sqlite``; ``person:NAME`` in a query, or the name written in its text,
then searches the library's faces for them (modules/faces/module.py).
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from zhaopian.indexer.decode import open_image
from zhaopian.search.errors import ConfigError, MediaError
from zhaopian.search.library import Library

from .module import FacesModule
from .store import Person

#: photos are scaled down to this longer side before their face is found
PHOTO_SIDE = 1024


def faces_module(library: Library) -> FacesModule:
    module = library.modules.get("faces")
    if not isinstance(module, FacesModule):
        raise ConfigError(f"library {library.name!r} has no faces module; people are registered in a library "
                          f"created with it, e.g. zhaopian library create NAME --modules visual,faces")
    return module


def load_photo(source: Path | bytes, name: str) -> Image.Image:
    """A photo from a file or uploaded bytes (``media_invalid`` when empty or not an image)."""
    if isinstance(source, bytes):
        if not source:
            raise MediaError(f"{name}: empty file (0 bytes)")
        return open_image(io.BytesIO(source), PHOTO_SIDE, name=name)
    return open_image(Path(source), PHOTO_SIDE)


def add_person(library: Library, name: str, photos: list[tuple[str, Path | bytes]]) -> Person:
    """Register ``name`` from photos (file paths, or (file name, bytes) uploads), or add photos to them."""
    module = faces_module(library)
    images = [(label, load_photo(source, label)) for label, source in photos]
    with library.write_lock():
        return module.add_person(name, images)


def list_people(library: Library) -> list[Person]:
    return faces_module(library).people()


def remove_person(library: Library, name: str) -> None:
    module = faces_module(library)
    with library.write_lock():
        module.remove_person(name)
