"""A central data folder with its log key, for tests that drive `localpay central` commands
on a store they made themselves: a command acts only on a data folder `central init` made
(the machine's own default folder may hold no key, as on a clean machine)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from central.keys import load_signer

_FOLDER: list[Path] = []


def initialised_data() -> str:
    """One folder per test process, made on first use."""
    if not _FOLDER:
        folder = Path(tempfile.mkdtemp(prefix="localpay-central-data-"))
        load_signer(folder)
        _FOLDER.append(folder)
    return str(_FOLDER[0])
