"""The central log's signing key and name, and the key that signs answers, kept in the
service's data folder.

Two keys, two jobs. The log key (``log.key``) signs the log's checkpoints and one
statement, a signed note naming the answer key (:func:`sync.protocol.answer_key_text`);
the answer key (``answer.key``) signs the answers to authenticated callers, over text that
holds the caller's nonce. So nothing a caller can have signed passes for a note of the log
(``note.Open`` with the log's verifier refuses every answer).

The data folder holds the keys, the enrolment codes' hashes and (by default) the SQLite
store: nothing in it is for other local users, so the folder is 0700 and every file 0600,
tightened on each start whatever an older release or a hand-made folder left.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from firmware_cfg import keys as keyfiles
from localpay.errors import ConfigError, KeyFileError
from sync.checkpoint import NoteSigner
from sync.protocol import answer_key_name

log = logging.getLogger(__name__)

DEFAULT_ORIGIN = "localpay.example/central"


def private_folder(folder: Path) -> None:
    """Make ``folder`` (0700) or tighten it and everything under it: folders 0700, files 0600.
    Symbolic links are left alone (their mode is not theirs to tighten)."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        _tighten(folder, 0o700)
        for root, dirs, files in os.walk(folder):
            for name in dirs:
                _tighten(Path(root) / name, 0o700)
            for name in files:
                _tighten(Path(root) / name, 0o600)
    except OSError as err:
        raise ConfigError(f"cannot make the data folder {folder} private: {err}") from err


def _tighten(path: Path, mode: int) -> None:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return
    if stat.S_IMODE(info.st_mode) & ~mode:
        # a key that was readable may have been read: say so, whoever rotates keys decides
        log.warning("%s was %s: tightened to %s", path, stat.filemode(info.st_mode),
                    stat.filemode(stat.S_IFMT(info.st_mode) | (stat.S_IMODE(info.st_mode) & mode)))
        os.chmod(path, stat.S_IMODE(info.st_mode) & mode)


def load_signer(data_dir: Path, origin: str | None = None, *, create: bool = True) -> NoteSigner:
    """The log's key (``log.key``, PEM, mode 0600) and name (``log.origin``) in ``data_dir``."""
    key_path, name_path = data_dir / "log.key", data_dir / "log.origin"
    if create or data_dir.is_dir():
        private_folder(data_dir)
    if not key_path.exists():
        if not create:
            raise KeyFileError(f"no central log key at {key_path}")
        keyfiles.write_secret(name_path, ((origin or DEFAULT_ORIGIN) + "\n").encode())
    loaded = keyfiles.signing_key(key_path, "central log key", create=create)
    stored = name_path.read_text(encoding="utf-8").strip() if name_path.exists() else ""
    name = stored or origin or DEFAULT_ORIGIN
    if origin and stored and origin != stored:
        raise ConfigError(f"this log is {stored!r}; it cannot be renamed to {origin!r}")
    if create:
        # made with the log key; a data folder from before answer keys gets one now
        _make_answer_key(data_dir / ANSWER_KEY)
    return NoteSigner(name, loaded)


ANSWER_KEY = "answer.key"


def load_answer_signer(data_dir: Path, log_signer: NoteSigner, *,
                       create: bool = True) -> NoteSigner:
    """The key that signs answers (``answer.key``, PEM, mode 0600, in ``data_dir``)."""
    path = data_dir / ANSWER_KEY
    if create:
        private_folder(data_dir)
        _make_answer_key(path)
    elif not path.exists():
        raise KeyFileError(f"no central answer key at {path} (a data folder from before "
                           "answer keys): `localpay central serve` makes it when it starts")
    return NoteSigner(answer_key_name(log_signer.name),
                      keyfiles.load_terminal_key(path, "central answer key"))


def _make_answer_key(path: Path) -> None:
    """Make ``path`` unless it exists, safely when several workers start at once: the key
    is written beside it and linked into place, so the first one made is the one every
    worker loads (a later maker's link fails and its file goes)."""
    if path.exists():
        return
    key = Ed25519PrivateKey.generate()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        keyfiles.write_secret(tmp, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8,
                                                     NoEncryption()))
        try:
            os.link(tmp, path)
            log.warning("made a new central answer key at %s", path)
        except FileExistsError:
            pass
    except OSError as err:
        raise KeyFileError(f"cannot make the central answer key {path}: {err}") from err
    finally:
        tmp.unlink(missing_ok=True)
