"""Write tests/data/entry_vectors.json: canonical entry encodings with hashes and signatures.

Run once when the encoding version changes; the test suite checks the code against the
file, so an accidental change of the encoding fails loudly.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_cfg.keys import public_hex
from offline_ledger import encoding
from offline_ledger.encoding import ZERO_HASH, EntryFields

SEED = bytes(range(32))


def main() -> None:
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    cases = [
        EntryFields(1, "tap", "BUS-85-0001", "0f1e2d3c4b5a69788796a5b4c3d2e1f0", 1500, 0, "85",
                    1_790_000_000_000, 1_790_000_000_000,
                    '{"bus_type":"city","rider":"adult","scheme":"uid"}', ZERO_HASH),
        EntryFields(2, "payment", "SHOP-0427-01", "aa" * 16, 12_800, 0, "M0427",
                    1_790_000_060_000, 1_790_000_060_000,
                    '{"card":"941012******9012","merchant_category":"local_food"}',
                    bytes.fromhex("11" * 32)),
        EntryFields(3, "refund", "SHOP-0427-01", "aa" * 16, 2_800, 2, "M0427",
                    1_789_999_000_000, 1_790_000_060_001, "{}", bytes.fromhex("22" * 32)),
        EntryFields(4, "deny_update", "상점-01", "", -5, 0, "가게", -1, 4, '{"note":"한글"}',
                    bytes.fromhex("33" * 32)),
    ]
    out = {
        "format": "LPE1",
        "private_key_seed": SEED.hex(),
        "public_key": public_hex(key),
        "vectors": [],
    }
    for f in cases:
        data = encoding.encode(f)
        out["vectors"].append({
            "fields": {**dataclasses.asdict(f), "prev_hash": f.prev_hash.hex()},
            "encoding": data.hex(),
            "entry_hash": encoding.entry_hash(data).hex(),
            "signature": key.sign(data).hex(),
        })
    path = Path(__file__).resolve().parent.parent / "tests" / "data" / "entry_vectors.json"
    path.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(cases)} vectors to {path}")


if __name__ == "__main__":
    main()
