"""Signed configuration bundles: config changes pushed from the central service.

A bundle is a JSON document::

    {"format": "localpay-config-bundle/1",
     "payload": "<base64 of the canonical payload bytes>",
     "signature": "<base64 Ed25519 signature over those bytes, by the operator key>"}

and the payload is canonical JSON (sorted keys, no spaces, UTF-8)::

    {"terminal_id": "BUS-85-0001", "version": 7, "issued_ms": 1790000000000,
     "config": "<the whole terminal.toml text>"}

The config may carry a ``[merchant]`` section: the facts of the terminal's merchant from
the central registry (id, name, BRN, category, region, memberships, see
:class:`firmware_cfg.config.MerchantSection`); a till shows that merchant's name.

The terminal accepts a bundle only when the signature verifies under the provisioned
operator key, the terminal id is its own, and the version is newer than the one it runs.
:func:`apply` swaps the file atomically and restores the previous one when the terminal
cannot start with the new config. It keeps the bundle itself beside the file
(``config.bundle``): the config the terminal runs is that bundle's, and
:func:`firmware_cfg.config.load` refuses a file that differs from it outside the local
fields (:data:`firmware_cfg.config.LOCAL_FIELDS`), which a new bundle leaves as the
technician set them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from firmware_cfg.config import (
    SIGNED_FILE,
    VERSION_FILE,
    Config,
    dumps,
    installed_version,
    kept_signed,
    loads,
    with_local,
)
from localpay.durable import replace_durably
from localpay.errors import ConfigError

log = logging.getLogger(__name__)

FORMAT = "localpay-config-bundle/1"


@dataclass(frozen=True)
class Bundle:
    terminal_id: str
    version: int
    issued_ms: int
    config_text: str
    config: Config
    #: the signed bundle as received, kept beside the config it installs
    data: bytes = b""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.config_text.encode("utf-8")).hexdigest()


def make(key: Ed25519PrivateKey, terminal_id: str, version: int, config_text: str,
         *, issued_ms: int | None = None) -> bytes:
    """Sign a bundle (the central service's side; also used by tests and the demo)."""
    loads(config_text)  # never sign a config the terminal would refuse
    payload = json.dumps(
        {"terminal_id": terminal_id, "version": version,
         "issued_ms": issued_ms if issued_ms is not None else int(time.time() * 1000),
         "config": config_text},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    ).encode("utf-8")
    return json.dumps({
        "format": FORMAT,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signature": base64.b64encode(key.sign(payload)).decode("ascii"),
    }).encode("utf-8")


def _field(obj: dict[str, Any], name: str, kind: type) -> Any:
    value = obj.get(name)
    if type(value) is not kind:
        raise ConfigError(f"config bundle: {name!r} must be {kind.__name__}, found {value!r}")
    return value


def peek(data: bytes) -> tuple[str, int]:
    """The terminal id and version a bundle names, WITHOUT checking its signature: for the
    central service to file it under its terminal. A terminal always uses :func:`verify`."""
    payload, _ = _unwrap(data)
    inner = _inner(payload)
    return _field(inner, "terminal_id", str), _field(inner, "version", int)


def peek_config(data: bytes) -> str:
    """The config text a bundle carries, WITHOUT checking its signature: for the central
    service to make the next version of a terminal's config from its newest one."""
    payload, _ = _unwrap(data)
    return str(_field(_inner(payload), "config", str))


def _unwrap(data: bytes) -> tuple[bytes, bytes]:
    try:
        outer = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigError(f"config bundle is not JSON: {err}") from err
    if not isinstance(outer, dict) or outer.get("format") != FORMAT:
        raise ConfigError(f"config bundle: expected format {FORMAT!r}")
    try:
        payload = base64.b64decode(_field(outer, "payload", str), validate=True)
        signature = base64.b64decode(_field(outer, "signature", str), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ConfigError(f"config bundle: bad base64: {err}") from err
    return payload, signature


def _inner(payload: bytes) -> dict[str, Any]:
    try:
        inner = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigError(f"config bundle payload is not JSON: {err}") from err
    if not isinstance(inner, dict):
        raise ConfigError("config bundle payload must be an object")
    return inner


def verify(data: bytes, operator_key: Ed25519PublicKey, terminal_id: str,
           current_version: int) -> Bundle:
    """Check a bundle; raise :class:`ConfigError` saying why it is refused."""
    payload, signature = _unwrap(data)
    try:
        operator_key.verify(signature, payload)
    except InvalidSignature:
        raise ConfigError("config bundle: signature does not verify with the operator key") \
            from None
    inner = _inner(payload)
    bundle_terminal = _field(inner, "terminal_id", str)
    version = _field(inner, "version", int)
    issued_ms = _field(inner, "issued_ms", int)
    text = _field(inner, "config", str)
    if bundle_terminal != terminal_id:
        raise ConfigError(f"config bundle is for terminal {bundle_terminal!r}, "
                          f"this is {terminal_id!r}")
    if version <= current_version:
        raise ConfigError(f"config bundle version {version} is not newer than the running "
                          f"version {current_version}")
    try:
        config = loads(text)
    except ConfigError as err:
        raise ConfigError(f"config bundle version {version}: {err}") from err
    if config.terminal.id != terminal_id:
        raise ConfigError(f"config bundle version {version} renames the terminal to "
                          f"{config.terminal.id!r}; a terminal id never changes by bundle")
    return Bundle(bundle_terminal, version, issued_ms, text, config, data)


def current_version(home: Path) -> int:
    """The version of the last bundle whose install completed (0: none)."""
    return installed_version(home)


def _write_atomic(path: Path, text: str | bytes) -> None:
    _write_atomic_bytes(path, text.encode("utf-8") if isinstance(text, str) else text)


def _write_atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".new")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    replace_durably(tmp, path)


def apply(home: Path, bundle: Bundle, start_check: Callable[[Config], None]) -> Config:
    """Install ``bundle`` as the home's ``terminal.toml``, atomically; return the config
    installed: the bundle's, with the local fields the technician had changed on site
    (:func:`firmware_cfg.config.with_local`).

    ``start_check`` must raise when the terminal cannot start with the new config; the
    previous file, kept bundle and version are then put back and the error re-raised as
    :class:`ConfigError`.
    """
    if not bundle.data:
        raise ConfigError("config bundle: only a verified bundle is installed (its bytes are "
                          "kept as the signed config)")
    config_path = home / "terminal.toml"
    kept_path = home / SIGNED_FILE
    previous = config_path.read_text(encoding="utf-8") if config_path.exists() else None
    previous_kept = kept_path.read_bytes() if kept_path.exists() else None
    previous_version = current_version(home)
    try:
        kept = kept_signed(home)
        running = loads(previous) if previous is not None else None
    except ConfigError:
        kept = running = None  # a broken file says nothing of what was changed on site
    config = with_local(bundle.config, kept[1] if kept else None, running)
    home.mkdir(parents=True, exist_ok=True)
    # the signed bundle first: a power cut before the file follows leaves a terminal that
    # refuses to start (naming the fields) rather than one running an unrecorded config
    _write_atomic(kept_path, bundle.data)
    _write_atomic(config_path, bundle.config_text if config == bundle.config else dumps(config))
    _write_atomic(home / VERSION_FILE, f"{bundle.version}\n")
    try:
        start_check(config)
    except Exception as err:
        log.error("config version %d cannot start, rolling back: %s", bundle.version, err)
        for path, old in ((config_path, previous), (kept_path, previous_kept)):
            if old is None:
                path.unlink(missing_ok=True)
            else:
                _write_atomic(path, old)
        _write_atomic(home / VERSION_FILE, f"{previous_version}\n")
        raise ConfigError(f"config version {bundle.version} rolled back: the terminal "
                          f"cannot start with it: {err}") from err
    log.info("config version %d applied (sha256 %s)", bundle.version, bundle.sha256[:16])
    return config
