"""``central serve --workers N``: the API in N uvicorn worker processes over one store.

Every worker builds its own :class:`~central.service.CentralLog` from the same options
(:class:`ServeOptions`, handed to the workers as JSON in the environment variable
:data:`OPTIONS_ENV`), so any worker answers any request. Nothing a request depends on lives
in a process:

- nonces (replay protection) are rows of the store's ``nonces`` table, inserted in the
  request's transaction: a nonce one worker took is refused by every other;
- a revoked terminal is a row of ``terminal_status``, read by each request's transaction;
- enrolment failures (the rate limit) are rows of ``enroll_failures``;
- crediting and the posting of spending keep their cursors in the store and take them
  under a row lock (``SELECT ... FOR UPDATE``), so two workers following the log at once
  never credit an entry twice: the second waits, then finds nothing left. Each worker
  runs the catch-up at its start for that reason, and none needs to be the only one;
- the connection cap (``--max-connections``) is each worker's own: N workers take up to N
  times as many connections;
- the Prometheus counters are summed over the workers through prometheus-client's
  multiprocess mode (a folder of value files, :data:`METRICS_DIR_ENV`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from central.http_limits import HttpLimits, LimitedH11Protocol
from localpay.errors import ConfigError

#: the serve options, as JSON, from the command that starts the workers to each worker
OPTIONS_ENV = "LOCALPAY_CENTRAL_SERVE"
#: prometheus-client's folder of the workers' counter files (its own variable name)
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True)
class ServeOptions:
    """What each worker needs to build the same service as every other."""

    db: str | None = None
    data: str | None = None
    origin: str | None = None
    rules: str | None = None
    verify: str = "every"
    topup_terms: str | None = None
    log_format: str = "json"
    trusted_proxies: tuple[str, ...] = ()
    limits: dict[str, Any] = dataclasses.field(default_factory=dict)
    stale_ms: int | None = None

    def to_env(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_env(cls) -> ServeOptions:
        text = os.environ.get(OPTIONS_ENV)
        if not text:
            raise ConfigError(f"{OPTIONS_ENV} is not set: start the workers with "
                              f"`central serve --workers N`")
        doc = json.loads(text)
        doc["trusted_proxies"] = tuple(doc.get("trusted_proxies") or ())
        return cls(**doc)

    def http_limits(self) -> HttpLimits:
        return HttpLimits(**self.limits)


def _env_limits() -> HttpLimits:
    text = os.environ.get(OPTIONS_ENV)
    return ServeOptions.from_env().http_limits() if text else HttpLimits()


class WorkerH11Protocol(LimitedH11Protocol):
    """The limited protocol with the limits of the options in the environment: uvicorn
    hands each worker its protocol class by name, so it cannot be made per call."""

    limits: ClassVar[HttpLimits] = _env_limits()


def build_app() -> Any:
    """The app of one worker (uvicorn's factory): the service opened from the options in
    the environment, its catch-up run once in a thread."""
    from central import open_service
    from central.app import create_app
    from central.observe import configure_logging
    from central.topups import load_terms

    opts = ServeOptions.from_env()
    configure_logging(opts.log_format)
    terms = load_terms(Path(opts.topup_terms)) if opts.topup_terms else None
    service = open_service(opts.db, Path(opts.data) if opts.data else None,
                           origin=opts.origin, rules=Path(opts.rules) if opts.rules else None,
                           policy=opts.verify)  # type: ignore[arg-type]
    if opts.stale_ms is not None:
        service.stale_ms = opts.stale_ms
    # safe in every worker at once: the cursors are taken under a row lock (module docstring)
    threading.Thread(target=service.keep_following, name="catch-up", daemon=True).start()
    return create_app(service, topup_terms=terms, trusted_proxies=opts.trusted_proxies,
                      limits=opts.http_limits())


def metrics_folder() -> Path:
    """A new, empty folder for the workers' counter files (the counts of a run before are
    not this run's)."""
    return Path(tempfile.mkdtemp(prefix="localpay-central-metrics-"))


def run_workers(opts: ServeOptions, workers: int, host: str, port: int,
                log_level: str = "warning") -> None:
    """Run the API in ``workers`` processes until interrupted."""
    import uvicorn

    if workers < 2:
        raise ConfigError("run_workers is for 2 workers or more; one runs in this process")
    limits = opts.http_limits()
    folder = metrics_folder()
    os.environ[OPTIONS_ENV] = opts.to_env()
    os.environ[METRICS_DIR_ENV] = str(folder)
    try:
        # as central.app.serve: proxy headers off, uvicorn's cap one above the protocol's
        uvicorn.run("central.workers:build_app", factory=True, workers=workers,
                    host=host, port=port, log_level=log_level, access_log=False,
                    proxy_headers=False, http="central.workers:WorkerH11Protocol",
                    timeout_keep_alive=limits.keep_alive_s,
                    limit_concurrency=limits.max_connections + 1)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
