"""``python -m central --db URL --data DIR --port P``: the service without the CLI."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from central import open_service
from central.app import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m central")
    parser.add_argument("--db", default=None)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8470)
    parser.add_argument("--verify", choices=["every", "anchor"], default="anchor")
    parser.add_argument("--stale-ms", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    service = open_service(args.db, args.data, policy=args.verify)
    if args.stale_ms is not None:
        service.stale_ms = args.stale_ms
    serve(service, args.host, args.port)


if __name__ == "__main__":
    main()
