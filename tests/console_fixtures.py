"""What the console's tests share: a service on a fresh PostgreSQL schema with its data folder
and its staff, a TestClient over ``https://`` (the session cookie is ``Secure``) logged in as
an operator, the login form's CSRF token, and the cells of a page's table.

A test module takes the fixture by importing it with the fixtures it stands on::

    from tests.console_fixtures import console_svc  # noqa: F401 - fixture
    from tests.pg_fixtures import pg_cluster  # noqa: F401 - fixture
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from central import open_service
from central.app import create_app
from central.console import operators
from central.service import CentralLog
from central.store import Store

PASSWORD = "correct horse battery staple"
#: the scheme's token key written to the data folder (a PAN typed in the console is turned
#: into its token with it)
TOKEN_KEY = bytes(range(32))
#: one operator of each role, by name
STAFF = {"vera": "viewer", "carl": "callcentre", "opal": "operator", "ada": "admin"}


def console_service(db: str, data: Path) -> CentralLog:
    """A service on ``db`` whose data folder holds :data:`TOKEN_KEY` (no operator yet)."""
    service = open_service(db, data)
    (data / "token.key").write_text(TOKEN_KEY.hex())
    (data / "token.key").chmod(0o600)
    return service


def add_staff(store: Store, *names: str) -> None:
    """The operators of :data:`STAFF` named (every one when none is), password
    :data:`PASSWORD`."""
    for name in names or tuple(STAFF):
        operators.add_operator(store, name, STAFF[name], PASSWORD)


@pytest.fixture
def console_svc(pg_cluster: Any, tmp_path: Path) -> Iterator[CentralLog]:
    """:func:`console_service` on a fresh PostgreSQL schema, with all of :data:`STAFF`."""
    service = console_service(pg_cluster.new_schema(), tmp_path / "data")
    add_staff(service.store)
    yield service
    service.store.close()


def client(svc: CentralLog) -> TestClient:
    return TestClient(create_app(svc), base_url="https://testserver")


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1)


def log_in(c: TestClient, name: str, password: str = PASSWORD) -> Any:
    page = c.get("/console/login")
    return c.post("/console/login", data={"csrf": csrf_of(page.text), "name": name,
                                          "password": password, "next": "/console/fleet"})


def logged_in(svc: CentralLog, name: str) -> TestClient:
    """A client of ``svc``'s console with ``name``'s session."""
    c = client(svc)
    done = log_in(c, name)
    assert done.status_code == 200, done.text[:500]
    return c


def cell_text(cell: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", cell)).split())


def table(page: str, table_id: str) -> list[list[str]]:
    """The body rows of the table ``table_id`` (or of the first table in ``page`` when
    ``table_id`` is empty), each a list of its cells' text."""
    start = rf'<table id="{table_id}"[^>]*>' if table_id else r"<table[^>]*>"
    found = re.search(start + r"(.*?)</table>", page, re.S)
    assert found, (table_id, page[:2000])
    body = found.group(1).split("<tbody>", 1)[1]
    return [[cell_text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]
