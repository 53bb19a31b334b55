"""``python -m tests.city.central_clock CLOCK ARGS...``: ``localpay ARGS`` in a process whose
``time.time`` and ``time.time_ns`` read the simulated clock CLOCK (the JSON of
:class:`tests.city.simclock.SimClock`).

The central service has no clock of its own to inject (``central.service._now`` and its
siblings read ``time.time``), so the week's ``central serve`` runs under this wrapper,
with ``--workers 1`` (uvicorn's worker processes would start without it).
"""

from __future__ import annotations

import sys

from tests.city.simclock import SimClock, install


def main(argv: list[str]) -> None:
    install(SimClock.from_json(argv[0]))
    from localpay.cli import cli

    cli.main(args=argv[1:], prog_name="localpay")


if __name__ == "__main__":
    main(sys.argv[1:])
