"""Key files: the terminal's Ed25519 signing key and the scheme's card-token key.

Secrets live only in files with mode 0600 (never in the TOML, logs or the command line).
The terminal key file is PEM PKCS#8; the token key file holds 32 random bytes as hex.
"""

from __future__ import annotations

import logging
import secrets
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from localpay.durable import make_dirs, write_durably
from localpay.errors import KeyFileError

log = logging.getLogger(__name__)


def write_secret(path: Path, data: bytes) -> None:
    """Write a secret file: mode 0600 from creation, synced, and swapped in atomically; on
    the disk, name included, when this returns (a first boot's key must outlive a power cut
    that keeps the ledger it signed)."""
    make_dirs(path.parent, mode=0o700)
    write_durably(path, data, mode=0o600)


def _read_secret(path: Path, what: str) -> bytes:
    try:
        info = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{what} file {path} does not exist") from None
    except OSError as err:
        raise KeyFileError(f"{what} file {path} cannot be read: {err.strerror}") from err
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{what} file {path} is readable by others (mode {stat.filemode(info.st_mode)}); "
            f"run: chmod 600 {path}"
        )
    return data


def generate_terminal_key(path: str | Path, what: str = "terminal key") -> Ed25519PrivateKey:
    """Make a new Ed25519 key and write it (PEM PKCS#8, 0600). Refuses to overwrite one."""
    path = Path(path)
    if path.exists():
        raise KeyFileError(f"{path} already exists; refusing to replace a {what}")
    key = Ed25519PrivateKey.generate()
    write_secret(path, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return key


def load_terminal_key(path: str | Path, what: str = "terminal key") -> Ed25519PrivateKey:
    """Load an Ed25519 key file, refusing a missing, loose or foreign one."""
    path = Path(path)
    data = _read_secret(path, what)
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise KeyFileError(f"{what} file {path} is not a PEM private key: {err}") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{what} file {path} holds a {type(key).__name__}, not Ed25519")
    return key


def signing_key(path: Path, what: str, *, create: bool) -> Ed25519PrivateKey:
    """A service's own signing key (central log, operator): made on first use if allowed."""
    if create and not path.exists():
        log.warning("making a new %s at %s", what, path)
        return generate_terminal_key(path, what)
    return load_terminal_key(path, what)


def generate_token_key(path: str | Path) -> bytes:
    path = Path(path)
    if path.exists():
        raise KeyFileError(f"{path} already exists; refusing to replace a token key")
    key = secrets.token_bytes(32)
    write_secret(path, key.hex().encode() + b"\n")
    return key


def load_token_key(path: str | Path) -> bytes:
    path = Path(path)
    text = _read_secret(path, "token key").decode("ascii", "replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise KeyFileError(f"token key file {path} is not hex") from None
    if len(key) < 16:
        raise KeyFileError(f"token key file {path} holds {len(key)} bytes; at least 16 needed")
    return key


def public_hex(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def public_from_hex(text: str, what: str = "public key") -> Ed25519PublicKey:
    try:
        raw = bytes.fromhex(text)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as err:
        raise KeyFileError(f"{what} is not 32 bytes of hex: {text[:20]!r}") from err


# Keys for the demo and the tests only, so that `localpay demo` runs with nothing provisioned.
# They are public by being here; no real terminal may ever use them.
DEMO_TOKEN_KEY = bytes.fromhex("6c6f63616c7061792d64656d6f2d746f6b656e2d6b65792d6e6f742d7265616c")
DEMO_ISSUER_SEED = bytes.fromhex("6c6f63616c7061792d64656d6f2d6973737565722d6b65792d6e6f742d2d2d2d")


def demo_issuer_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(DEMO_ISSUER_SEED)
