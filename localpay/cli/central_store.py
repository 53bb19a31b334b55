"""Which data folder and which store every ``localpay central`` command acts on, decided in
one place, and ``localpay central init``, which makes them.

The data folder (the log key, ``central.toml``, the default SQLite store): ``--data``, else
``LOCALPAY_CENTRAL_DATA``, else ``central`` in the home folder when the global ``--home``
(or ``LOCALPAY_HOME``) names one, else ``$XDG_DATA_HOME/localpay/central``.

The store: ``--db``, else ``LOCALPAY_CENTRAL_DB``, else the ``db`` key of ``central.toml``
in the data folder, else ``sqlite:///DATA/central.sqlite``.

A command never makes a store or a key as a side effect: one pointed at a folder without
the log key or a store without the schema refuses, so that a deny list is not "added" to
a fresh SQLite file that no terminal reads while the service runs on PostgreSQL.
"""

from __future__ import annotations

import functools
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import click

from localpay.cli.common import UserError
from localpay.errors import ConfigError

DB_ENV = "LOCALPAY_CENTRAL_DB"
DATA_ENV = "LOCALPAY_CENTRAL_DATA"
CONFIG_NAME = "central.toml"

Check = Literal["service", "key", "none"]


@dataclass(frozen=True)
class Where:
    """A central command's data folder and store URL, and what named the store."""

    data: Path
    db: str
    named_by: str  # "--db", DB_ENV, the central.toml path, or "" for the default

    @property
    def config_path(self) -> Path:
        return self.data / CONFIG_NAME


def read_config(folder: Path) -> dict[str, str]:
    """``central.toml`` of ``folder`` (empty when there is none). Its one key is ``db``."""
    path = folder / CONFIG_NAME
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: {err}") from err
    unknown = sorted(set(table) - {"db"})
    if unknown:  # a misspelt key would silently leave the default store in use
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} (the one key is db)")
    if "db" in table and (not isinstance(table["db"], str) or not table["db"].strip()):
        raise ConfigError(f"{path}: db must be a store URL (sqlite:///PATH or "
                          "postgresql://...)")
    return {k: str(v).strip() for k, v in table.items()}


def write_config(folder: Path, db: str) -> None:
    """``central.toml`` naming ``db``; mode 0600 from creation (a URL may hold a password)."""
    from firmware_cfg.keys import write_secret

    # a JSON string is a TOML basic string
    write_secret(folder / CONFIG_NAME, f"db = {json.dumps(db)}\n".encode())


def explicit_home(ctx: click.Context | None) -> Path | None:
    """The home folder the global ``--home`` (or ``LOCALPAY_HOME``) named; ``None`` when the
    default was taken (a default home says nothing about where the central data is)."""
    if ctx is None:
        return None
    home = ctx.find_root().params.get("home")
    return Path(home) if home else None


def resolve(db: str | None, data: Path | None, home: Path | None = None) -> Where:
    """The data folder and store of a central command (see the module's docstring)."""
    from central import default_data_dir, store_url

    env_data = os.environ.get(DATA_ENV, "").strip()
    folder = data or (Path(env_data) if env_data else None) \
        or (home / "central" if home else None) or default_data_dir()
    if db:
        return Where(folder, db, "--db")
    env_db = os.environ.get(DB_ENV, "").strip()
    if env_db:
        return Where(folder, env_db, DB_ENV)
    named = read_config(folder).get("db")
    if named:
        return Where(folder, named, str(folder / CONFIG_NAME))
    return Where(folder, store_url(None, folder), "")


def current(db: str | None, data: Path | None) -> Where:
    """:func:`resolve` with the home folder of the running command line."""
    return resolve(db, data, explicit_home(click.get_current_context(silent=True)))


def _named(where: Where) -> str:
    from central import shown

    by = f", named by {where.named_by}" if where.named_by else ""
    return f"central store {shown(where.db)}{by}, data folder {where.data}"


def require(where: Where, check: Check = "service") -> None:
    """Refuse, in one line, a data folder without the log key or (``check="service"``) a
    store without the schema; looks only, makes nothing."""
    from central import has_schema

    if check == "none":
        return
    missing = [] if (where.data / "log.key").exists() else ["no log key"]
    if check == "service" and not has_schema(where.db):
        missing.append("no schema in the store")
    if missing:
        raise UserError(f"{_named(where)}: not initialised ({', '.join(missing)}); run "
                        "`localpay central init` first")


_META = "localpay.central.where"


def resolved_where() -> Where:
    """What :func:`service_options` resolved for the running command (with what named the
    store, which the command's own ``db`` argument no longer tells)."""
    where = click.get_current_context().meta.get(_META)
    if not isinstance(where, Where):  # pragma: no cover - only commands it decorates ask
        raise click.UsageError("no central store resolved")
    return where


def service_options(func: Any = None, *, check: Check = "service") -> Any:
    """``--db`` and ``--data`` for a central command, resolved here: the command gets the
    store URL and the data folder (never ``None``), after :func:`require` passed.
    ``@service_options`` or ``@service_options(check="key" | "none")``."""
    if func is None:
        return functools.partial(service_options, check=check)

    @functools.wraps(func)
    def resolved(*args: Any, db: str | None, data: Path | None, **kw: Any) -> Any:
        where = current(db, data)
        require(where, check)
        ctx = click.get_current_context(silent=True)
        if ctx is not None:
            ctx.meta[_META] = where
        return func(*args, db=where.db, data=where.data, **kw)

    resolved = click.option(
        "--db", default=None, metavar="URL",
        help=f"sqlite:///PATH or postgresql://... (default: ${DB_ENV}, else db in "
        f"{CONFIG_NAME} of the data folder, else SQLite in the data folder).")(resolved)
    return click.option(
        "--data", "data", type=click.Path(file_okay=False, path_type=Path), default=None,
        help=f"Folder of the log key, {CONFIG_NAME} and the default SQLite store (default: "
        f"${DATA_ENV}, else HOME/central for a --home, else "
        "~/.local/share/localpay/central).")(resolved)


def _absolute(url: str) -> str:
    """A SQLite URL with an absolute path: ``central.toml`` is read from any folder."""
    if url.startswith("sqlite:///"):
        return f"sqlite:///{Path(url[len('sqlite:///'):]).absolute()}"
    if "://" not in url:
        return f"sqlite:///{Path(url).absolute()}"
    return url


@click.command("init")
@service_options(check="none")
@click.option("--origin", default=None, metavar="NAME",
              help="The log's name in its checkpoints (default: localpay.example/central).")
def init(db: str, data: Path, origin: str | None) -> None:
    """Make the central service's data folder (private), its log key and its store's schema;
    a store named by --db or LOCALPAY_CENTRAL_DB is written to central.toml, so later
    commands need neither.

    Refused when both are there already; what a half-done run left is completed.
    """
    from central import has_schema, open_service, shown

    where = resolved_where()
    keyed = (where.data / "log.key").exists()
    if keyed and has_schema(where.db):
        raise UserError(f"{_named(where)}: already initialised (log key and schema); nothing "
                        "changed")
    record = where.named_by in ("--db", DB_ENV)
    if record:
        held = read_config(where.data).get("db")
        if held and _absolute(held) != _absolute(where.db):
            raise UserError(f"{where.config_path} names the store {shown(held)}, not "
                            f"{shown(where.db)}: edit it (or remove it) and run init again")
    service = open_service(where.db, where.data, origin=origin, create=True)
    try:
        if record and not read_config(where.data).get("db"):
            write_config(where.data, _absolute(where.db))
        click.echo(f"central log {service.origin} initialised: store {shown(where.db)} "
                   f"({service.store.kind}), data folder {where.data}")
        if record:
            click.echo(f"{where.config_path} names this store: later commands need no --db")
        click.echo("verifier key (keys.central_public_key of the terminals):")
        click.echo(service.signer.verifier.text())
    finally:
        service.store.close()
