"""``localpay central serve``: the central service's HTTP JSON API, in one process or in
several workers (``--workers``), with the entry audit in a thread of its own."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import click

from localpay.cli.central_store import require, resolved_where, service_options

log = logging.getLogger(__name__)


@click.command()
@service_options(check="none")
@click.option("--init", "make", is_flag=True, help="Make the log key and the store's "
              "schema when missing (a first start), as `central init` does.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8470, show_default=True)
@click.option("--origin", default=None, help="Log name in checkpoints (first start only).")
@click.option("--rules", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="Fraud rules TOML ([travel], [round_burst], [below_limit]).")
@click.option("--verify", type=click.Choice(["every", "anchor"]), default="anchor",
              show_default=True, help="every: check each entry's signature; anchor: check "
              "each hash link and the signature of each batch's last entry (the audit "
              "checks each entry's own later: --audit-every).")
@click.option("--topup-terms", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="TOML file with a [topup] table (programme, "
              "discount_percent, monthly_limit): opens POST /v1/topups to partners.")
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json",
              show_default=True, envvar="LOCALPAY_LOG_FORMAT", show_envvar=True,
              help="Log lines as JSON objects or text; either way one access line a request.")
@click.option("--metrics-token", default=None, envvar="LOCALPAY_METRICS_TOKEN",
              show_envvar=True, metavar="TOKEN", help="/metrics asks for Authorization: "
              "Bearer TOKEN (prefer the environment variable: a command line is visible "
              "to every user).")
@click.option("--trusted-proxy", "trusted_proxy", multiple=True, metavar="IP",
              help="A reverse proxy (address or network) whose X-Forwarded-For names the "
              "client, for counting failed enrolments; repeatable. Default: none, the "
              "header is ignored.")
@click.option("--header-timeout", type=click.FloatRange(0, min_open=True), default=10.0,
              show_default=True, metavar="S", help="Seconds a request's line and headers "
              "may take to arrive (also how long a new connection may stay silent).")
@click.option("--body-timeout", type=click.FloatRange(0, min_open=True), default=30.0,
              show_default=True, metavar="S", help="Seconds a request's body may take.")
@click.option("--keep-alive", type=click.IntRange(1), default=5, show_default=True,
              metavar="S", help="Seconds an idle connection is kept between requests.")
@click.option("--max-connections", type=click.IntRange(1), default=400, show_default=True,
              metavar="N",
              help="Open connections at most; one more is refused at once (503).")
@click.option("--max-body", type=click.IntRange(1), default=8 * 1024 * 1024,
              show_default=True, metavar="BYTES", help="Largest request body read; a "
              "larger one is refused (413) before it is read.")
@click.option("--workers", type=click.IntRange(1), default=os.cpu_count() or 1,
              show_default="the number of cores", metavar="N",
              envvar="LOCALPAY_CENTRAL_WORKERS", show_envvar=True,
              help="Worker processes answering the API; each answers any request (every "
              "state is in the store). --max-connections is each worker's.")
@click.option("--audit-every", type=click.FloatRange(min=0), default=60.0, show_default=True,
              metavar="S", help="Seconds between two runs of the entry audit (`central "
              "audit`) in a thread of this process; 0: none.")
def serve(db: str, data: Path, make: bool, host: str, port: int, origin: str | None,
          rules: Path | None, verify: str, topup_terms: Path | None, log_format: str,
          metrics_token: str | None, trusted_proxy: tuple[str, ...], header_timeout: float,
          body_timeout: float, keep_alive: int, max_connections: int, max_body: int,
          workers: int, audit_every: float) -> None:
    """Run the HTTP JSON API (FastAPI on uvicorn) until interrupted."""
    from central.app import serve as run
    from central.enroll import trusted_proxies
    from central.http_limits import HttpLimits
    from central.metrics import set_token
    from central.observe import configure_logging
    from central.topups import load_terms
    from localpay.cli.central import open_central

    configure_logging(log_format)
    set_token(metrics_token)

    # read before anything starts: a bad terms file stops the start, not the first sale
    terms = load_terms(topup_terms) if topup_terms else None
    trusted_proxies(trusted_proxy)  # a mistyped address stops the start too
    if not make:
        require(resolved_where())
    service = open_central(db, data, origin=origin, rules=rules, policy=verify, create=make)
    if log_format == "json":  # every line of the service's output one JSON object
        log.warning("central log %s on http://%s:%d (%s); verifier key: %s", service.origin,
                    host, port, service.store.kind, service.signer.verifier.text())
    else:
        click.echo(f"central log {service.origin} on http://{host}:{port} "
                   f"({service.store.kind}); verifier key:\n{service.signer.verifier.text()}",
                   err=True)
    limits = HttpLimits(header_timeout, body_timeout, keep_alive, max_connections, max_body)
    if audit_every:  # one thread for the whole service, whatever its number of workers
        from central.audit import BackgroundAudit

        BackgroundAudit(service.store, audit_every).start()
    if workers > 1:
        _serve_workers(service, workers, host, port, limits, db=db, data=data, origin=origin,
                       rules=rules, verify=verify, topup_terms=topup_terms,
                       log_format=log_format, metrics_token=metrics_token,
                       trusted_proxy=trusted_proxy)
        return
    # Entries committed just before a stop, or left by a follower that failed, are credited
    # by the next batch, or here: at once, then every minute.
    threading.Thread(target=service.keep_following, name="catch-up", daemon=True).start()
    run(service, host, port, topup_terms=terms, trusted_proxies=trusted_proxy, limits=limits)


def _serve_workers(service: Any, workers: int, host: str, port: int, limits: Any, *,
                   db: str | None, data: Path | None, origin: str | None, rules: Path | None,
                   verify: str, topup_terms: Path | None, log_format: str,
                   metrics_token: str | None, trusted_proxy: tuple[str, ...]) -> None:
    """``serve --workers N`` (N > 1): the key and schema are made here, once, before any
    worker opens the store; each worker then builds the same service (central.workers)."""
    import dataclasses

    from central.app import create_app
    from central.metrics import TOKEN_ENV
    from central.workers import ServeOptions, run_workers

    # the app once here: what it makes on first use (the operator and token keys, tables)
    # is made by one process, not raced for by the workers; the store stays open, for the
    # audit thread that runs in this process when asked for
    create_app(service, trusted_proxies=trusted_proxy, limits=limits)
    if metrics_token:  # the workers read it from their environment
        os.environ[TOKEN_ENV] = metrics_token
    opts = ServeOptions(
        db=db, data=str(data) if data else None, origin=service.origin,
        rules=str(rules) if rules else None, verify=verify,
        topup_terms=str(topup_terms) if topup_terms else None, log_format=log_format,
        trusted_proxies=trusted_proxy, limits=dataclasses.asdict(limits))
    run_workers(opts, workers, host, port)
