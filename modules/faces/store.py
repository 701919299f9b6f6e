"""What the ``faces`` module keeps in the library's ``media.sqlite`` beside the catalog.

``face_tracks``   one row per track unit: the norm of its raw mean descriptor (the FAISS file holds
                  the unit vector; the norm turns cosine back into dlib's distance exactly), how many
                  sightings and descriptors it has, its box at the thumbnail time and best score.
                  Rows go with their unit (``ON DELETE CASCADE``).
``people``        named people of this library
``person_faces``  each registered photo of a person: its raw descriptor and where it came from

Every write is one SQLite transaction on the catalog's connection.
"""

from __future__ import annotations

import json
import sqlite3
import time
import unicodedata
from dataclasses import dataclass

import numpy as np

from zhaopian.search.catalog import MediaCatalog, transaction
from zhaopian.search.errors import ConfigError, NotFound

from .analyzer import Box

SCHEMA = """
CREATE TABLE IF NOT EXISTS face_tracks (
    unit_id INTEGER PRIMARY KEY REFERENCES units(id) ON DELETE CASCADE,
    norm REAL NOT NULL,
    sightings INTEGER NOT NULL,
    described INTEGER NOT NULL,
    box TEXT NOT NULL,
    score REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS people (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS person_faces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    descriptor BLOB NOT NULL,
    source TEXT NOT NULL,
    box TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS person_faces_person ON person_faces(person_id);
"""

#: longest person name, in characters
MAX_NAME = 64


def clean_name(name: str) -> str:
    """A person's name as stored: NFKC, spaces collapsed; refused when empty, too long or odd."""
    text = " ".join(unicodedata.normalize("NFKC", name or "").split())
    if not text:
        raise ConfigError("a person needs a name")
    if len(text) > MAX_NAME:
        raise ConfigError(f"person name too long ({len(text)} characters, limit {MAX_NAME})")
    if any(unicodedata.category(ch)[0] == "C" for ch in text) or any(ch in text for ch in ',、:"“”'):
        raise ConfigError(f"invalid person name {text!r}: no commas, colons, quotes or control characters")
    return text


@dataclass(frozen=True)
class TrackRow:
    unit_id: int
    norm: float
    sightings: int
    described: int
    box: Box
    score: float


@dataclass(frozen=True)
class Person:
    name: str
    photos: int
    created: float


@dataclass(frozen=True)
class PersonFace:
    person: str
    descriptor: np.ndarray  # raw, float32 (128,)
    source: str


class FaceTables:
    def __init__(self, media: MediaCatalog) -> None:
        self.conn: sqlite3.Connection = media.conn
        with transaction(self.conn):
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self.conn.execute(statement)

    # tracks ------------------------------------------------------------------------------------
    def add_tracks(self, rows: list[TrackRow]) -> None:
        with transaction(self.conn):
            self.conn.executemany(
                "INSERT OR REPLACE INTO face_tracks(unit_id, norm, sightings, described, box, score) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(r.unit_id, r.norm, r.sightings, r.described, json.dumps([round(v, 4) for v in r.box]), r.score)
                 for r in rows])

    def tracks(self, unit_ids: list[int]) -> dict[int, TrackRow]:
        out: dict[int, TrackRow] = {}
        for i in range(0, len(unit_ids), 900):
            chunk = [int(u) for u in unit_ids[i : i + 900]]
            rows = self.conn.execute(f"SELECT * FROM face_tracks WHERE unit_id IN ({','.join('?' * len(chunk))})",
                                     chunk)
            out.update({r["unit_id"]: TrackRow(r["unit_id"], r["norm"], r["sightings"], r["described"],
                                               tuple(json.loads(r["box"])), r["score"]) for r in rows})
        return out

    # people ------------------------------------------------------------------------------------
    def add_person_faces(self, name: str, faces: list[tuple[np.ndarray, str, Box]]) -> Person:
        """Add photos' descriptors to a person, creating the person if new."""
        name = clean_name(name)
        now = time.time()
        with transaction(self.conn):
            self.conn.execute("INSERT OR IGNORE INTO people(name, created) VALUES (?, ?)", (name, now))
            person_id = self.conn.execute("SELECT id FROM people WHERE name=?", (name,)).fetchone()["id"]
            self.conn.executemany(
                "INSERT INTO person_faces(person_id, descriptor, source, box, created) VALUES (?, ?, ?, ?, ?)",
                [(person_id, np.asarray(d, np.float32).tobytes(), source, json.dumps([round(v, 4) for v in box]), now)
                 for d, source, box in faces])
        return self.person(name)

    def person(self, name: str) -> Person:
        row = self.conn.execute(
            "SELECT p.name, p.created, COUNT(f.id) AS photos FROM people p LEFT JOIN person_faces f "
            "ON f.person_id = p.id WHERE p.name=? GROUP BY p.id", (clean_name(name),)).fetchone()
        if row is None:
            raise NotFound(f"no person named {name!r} in this library")
        return Person(row["name"], row["photos"], row["created"])

    def people(self) -> list[Person]:
        rows = self.conn.execute(
            "SELECT p.name, p.created, COUNT(f.id) AS photos FROM people p LEFT JOIN person_faces f "
            "ON f.person_id = p.id GROUP BY p.id ORDER BY p.name")
        return [Person(r["name"], r["photos"], r["created"]) for r in rows]

    def names(self) -> list[str]:
        return [r["name"] for r in self.conn.execute("SELECT name FROM people")]

    def faces_of(self, name: str) -> list[PersonFace]:
        rows = self.conn.execute(
            "SELECT p.name, f.descriptor, f.source FROM person_faces f JOIN people p ON p.id = f.person_id "
            "WHERE p.name=? ORDER BY f.id", (name,))
        return [PersonFace(r["name"], np.frombuffer(r["descriptor"], np.float32).copy(), r["source"]) for r in rows]

    def remove_person(self, name: str) -> None:
        person = self.person(name)
        with transaction(self.conn):
            self.conn.execute("DELETE FROM people WHERE name=?", (person.name,))
