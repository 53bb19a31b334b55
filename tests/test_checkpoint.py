"""Checkpoints and signed notes against c2sp.org/signed-note and c2sp.org/tlog-checkpoint."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from localpay.errors import ProofError, SyncProtocolError
from sync import merkle
from sync.checkpoint import Checkpoint, NoteSigner, NoteVerifier, open_note

NOTE = json.loads((Path(__file__).parent / "data" / "c2sp_signed_note_vectors.json").read_text())


def _go_signer() -> NoteSigner:
    _, _, name, _, b64 = NOTE["private_key"].split("+", 4)
    raw = base64.b64decode(b64)
    return NoteSigner(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))


def test_reference_note_verifies_and_signs_identically() -> None:
    verifier = NoteVerifier.parse(NOTE["verifier_key"])
    assert verifier.id.hex() == "c74f20a3"
    assert open_note(NOTE["note"], verifier) == NOTE["text"]
    signer = _go_signer()
    assert signer.verifier.text() == NOTE["verifier_key"]
    assert signer.sign(NOTE["text"]) == NOTE["note"]


def test_reference_note_tampered_is_rejected() -> None:
    verifier = NoteVerifier.parse(NOTE["verifier_key"])
    with pytest.raises(ProofError):
        open_note(NOTE["note"].replace("cryptography", "cryptographi"), verifier)


def _signer(name: str = "localpay.example/central") -> NoteSigner:
    return NoteSigner(name, Ed25519PrivateKey.generate())


def test_checkpoint_round_trip_and_format() -> None:
    signer = _signer()
    root = merkle.root([merkle.leaf_hash(b"a"), merkle.leaf_hash(b"b")])
    note = Checkpoint(signer.name, 2, root).sign(signer)
    body, sig = note.split("\n\n")
    assert body == f"localpay.example/central\n2\n{base64.b64encode(root).decode()}"
    assert sig.startswith("\u2014 localpay.example/central ")
    blob = base64.b64decode(sig.split(" ")[2])
    assert blob[:4] == signer.verifier.id and len(blob) == 68
    cp = Checkpoint.verify(note, signer.verifier)
    assert (cp.origin, cp.size, cp.root) == (signer.name, 2, root)


def test_checkpoint_refusals() -> None:
    signer, other = _signer(), _signer()
    note = Checkpoint(signer.name, 5, bytes(32)).sign(signer)
    with pytest.raises(ProofError):  # same name, other key: no known signature
        Checkpoint.verify(note, other.verifier)
    with pytest.raises(ProofError):
        Checkpoint.verify(note.replace("\n5\n", "\n6\n"), signer.verifier)
    with pytest.raises(ProofError):
        Checkpoint.verify(note, signer.verifier, origin="another.example/log")
    # An unknown extra signer is ignored; the known one still verifies.
    stranger = _signer("stranger.example")
    extra = note + stranger.sign(Checkpoint(signer.name, 5, bytes(32)).body()).split("\n\n")[1]
    assert Checkpoint.verify(extra, signer.verifier).size == 5
    for bad in ("", "no blank line\n", note.rstrip("\n"), note.replace("\u2014", "-"),
                Checkpoint(signer.name, 5, bytes(32)).body() + "\n\u2014 x !!!\n"):
        with pytest.raises(SyncProtocolError):
            Checkpoint.verify(bad, signer.verifier)


@pytest.mark.parametrize("body", ["o\n01\nAAAA\n", "o\n1\n" + "A" * 44 + "\n", "o\n-1\nx\n",
                                  "\n1\n" + base64.b64encode(bytes(32)).decode() + "\n",
                                  "o\n1\n"])
def test_malformed_bodies(body: str) -> None:
    with pytest.raises(SyncProtocolError):
        Checkpoint.parse_body(body)


def test_verifier_key_parsing() -> None:
    text = _signer().verifier.text()
    assert NoteVerifier.parse(text).text() == text
    name, kid, key = text.split("+", 2)
    for bad in (f"{name}+{kid}", f"{name}+00000000+{key}", f"{name}+{kid}+@@@",
                f"bad name+{kid}+{key}"):
        with pytest.raises(SyncProtocolError):
            NoteVerifier.parse(bad)
