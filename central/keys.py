"""The central log's signing key and name, kept in the service's data folder."""

from __future__ import annotations

from pathlib import Path

from firmware_cfg import keys as keyfiles
from localpay.errors import ConfigError, KeyFileError
from sync.checkpoint import NoteSigner

DEFAULT_ORIGIN = "localpay.example/central"


def load_signer(data_dir: Path, origin: str | None = None, *, create: bool = True) -> NoteSigner:
    """The log's key (``log.key``, PEM, mode 0600) and name (``log.origin``) in ``data_dir``."""
    key_path, name_path = data_dir / "log.key", data_dir / "log.origin"
    if not key_path.exists():
        if not create:
            raise KeyFileError(f"no central log key at {key_path}")
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        name_path.write_text((origin or DEFAULT_ORIGIN) + "\n", encoding="utf-8")
    loaded = keyfiles.signing_key(key_path, "central log key", create=create)
    stored = name_path.read_text(encoding="utf-8").strip() if name_path.exists() else ""
    name = stored or origin or DEFAULT_ORIGIN
    if origin and stored and origin != stored:
        raise ConfigError(f"this log is {stored!r}; it cannot be renamed to {origin!r}")
    return NoteSigner(name, loaded)
