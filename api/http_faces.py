"""HTTP routes for the people of a library's faces module: ``/v1/libraries/{name}/people``.

    POST   /v1/libraries/{name}/people          multipart: name, photos (one or more files) -> 201 Person
    GET    /v1/libraries/{name}/people          the registered people
    DELETE /v1/libraries/{name}/people/{person} 204

Errors use the API's codes: a library without the faces module is ``config_invalid``, a photo
that is not an image or shows no face (or not the same person as the others) ``media_invalid``,
an unknown person ``not_found``.
"""

# no ``from __future__ import annotations``: FastAPI reads these routes' parameter types at definition,
# and the caller dependency is handed in by api/http.py
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from pydantic import BaseModel

from zhaopian.modules.faces.people import add_person, list_people, remove_person
from zhaopian.modules.faces.store import Person as StoredPerson

from .service import Service


class Person(BaseModel):
    name: str
    #: registered photos (each one face's descriptor)
    photos: int
    #: epoch seconds
    created: float

    @classmethod
    def of(cls, person: StoredPerson) -> "Person":
        return cls(name=person.name, photos=person.photos, created=person.created)


def people_routes(svc: Service, caller: Any, check_size: Callable[[int | None], None]) -> APIRouter:
    """The routes, with ``caller`` the API's dependency that authenticates a request (its tenant)."""
    router = APIRouter(tags=["people"])

    @router.post("/libraries/{name}/people", response_model=Person, status_code=201)
    def create_person(name: str, who: caller,
                      person: Annotated[str, Form(alias="name", description="the person's name")],
                      photos: Annotated[list[UploadFile], File(description="photos of the person's face")]) -> Person:
        """Register a person from photos (or add photos to a registered one); search with ``person:NAME``."""
        for photo in photos:
            check_size(photo.size)
        uploads = [(photo.filename or f"photo {i + 1}", photo.file.read()) for i, photo in enumerate(photos)]
        return Person.of(add_person(svc.library(name, who.tenant), person, uploads))

    @router.get("/libraries/{name}/people", response_model=list[Person])
    def get_people(name: str, who: caller) -> list[Person]:
        return [Person.of(p) for p in list_people(svc.library(name, who.tenant))]

    @router.delete("/libraries/{name}/people/{person}", status_code=204)
    def delete_person(name: str, person: str, who: caller) -> None:
        remove_person(svc.library(name, who.tenant), person)

    return router
