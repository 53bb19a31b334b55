"""Answers leave at once on every connection, however many workers (central/http_limits.py).

With ``central serve --workers N`` uvicorn makes the listening socket itself
(``socket.socket(AF_INET)``, protocol number 0) and hands it to each worker; asyncio turns
Nagle's algorithm off (``TCP_NODELAY``) only on sockets whose protocol number says TCP, so the
connections a worker accepted from it kept Nagle on. An answer's body written after its
headers then waited for the client's delayed ACK: about 40 ms on every request of a
keep-alive connection, against well under a millisecond with one worker.

Both tests read the option on the very sockets the service accepted, not a timing: in
process through uvicorn's own record of its connections, and in a real ``central serve
--workers 2`` by taking a copy of each worker's connection sockets (``pidfd_getfd``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn
from click.testing import CliRunner

from central.http_limits import HttpLimits, protocol_class
from localpay.cli import cli
from tests.pg_fixtures import CentralProcess, start_central

SERVE = ("-m", "localpay", "central", "serve")
REQUESTS = 20


def _nodelay(sock: socket.socket) -> bool:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def _hello(scope: dict, receive: object, send: object) -> None:
    # an app with nothing of its own to wait for: the protocol under test is what answers
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200,  # type: ignore[operator]
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})  # type: ignore[operator]


@contextlib.contextmanager
def _in_process(workers_socket: bool) -> Iterator[tuple[uvicorn.Server, int]]:
    """A uvicorn server in a thread of this process with the service's protocol class;
    ``workers_socket``: on a listening socket made as ``--workers N`` makes it."""
    config = uvicorn.Config(_hello, host="127.0.0.1", port=0, log_level="warning",
                            http=protocol_class(HttpLimits()), lifespan="off")
    sockets = [config.bind_socket()] if workers_socket else None
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete,
                              args=(server.serve(sockets=sockets),), daemon=True)
    thread.start()
    try:
        for _ in range(600):
            if server.started:
                break
            threading.Event().wait(0.05)
        assert server.started
        port = server.servers[0].sockets[0].getsockname()[1]
        yield server, port
    finally:
        server.should_exit = True
        thread.join(10)
        loop.close()
        for s in sockets or []:
            s.close()


def test_the_workers_socket_is_made_without_the_tcp_protocol_number() -> None:
    # why the fix is needed at all: asyncio sets TCP_NODELAY only where proto says TCP
    config = uvicorn.Config(_hello, host="127.0.0.1", port=0)
    sock = config.bind_socket()
    try:
        assert sock.proto != socket.IPPROTO_TCP
    finally:
        sock.close()


def test_every_accepted_connection_has_nagle_off_with_one_worker_and_with_many() -> None:
    for workers_socket in (True, False):
        with _in_process(workers_socket) as (server, port):
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                for _ in range(REQUESTS):  # one keep-alive connection, answered each time
                    assert client.get("/").text == "hello"
                held = list(server.server_state.connections)
                assert len(held) == 1, held
                sock = held[0].transport.get_extra_info("socket")
                assert sock.getsockname()[1] == port
                assert _nodelay(sock), f"workers socket: {workers_socket}"


# -- a real `central serve --workers 2` -----------------------------------------------------

_PIDFD_GETFD = 438  # the system call's number on x86_64 and on aarch64's generic table


def _copy_fd(pid: int, fd: int) -> int:
    """A copy, in this process, of descriptor ``fd`` of process ``pid`` (Linux 5.6+)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        got = libc.syscall(_PIDFD_GETFD, pidfd, fd, 0)
        if got < 0:
            raise OSError(ctypes.get_errno(), f"pidfd_getfd({pid}, {fd})")
        return int(got)
    finally:
        os.close(pidfd)


def _workers(server: CentralProcess) -> list[int]:
    kids = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text()
    return [int(p) for p in kids.split()
            if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()]


def _accepted(server: CentralProcess, peer_port: int) -> list[socket.socket]:
    """Copies of the sockets the workers accepted from the client at ``peer_port``."""
    found = []
    for pid in _workers(server):
        for entry in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if not entry.readlink().as_posix().startswith("socket:["):
                    continue
                sock = socket.socket(fileno=_copy_fd(pid, int(entry.name)))
            except OSError:
                continue  # closed since it was listed
            try:
                if (sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
                        and sock.getpeername()[1] == peer_port):
                    found.append(sock)
                    continue
            except OSError:
                pass  # a listening socket has no peer
            sock.close()
    return found


def test_central_serve_with_two_workers_answers_keep_alive_with_nagle_off(
        tmp_path: Path) -> None:
    db, data = f"sqlite:///{tmp_path / 'central.sqlite'}", tmp_path / "data"
    made = CliRunner().invoke(cli, ["central", "init", "--db", db, "--data", str(data)])
    assert made.exit_code == 0, made.output
    server = start_central(db, data, command=SERVE, extra=("--workers", "2"), timeout=60)
    try:
        assert len(_workers(server)) == 2
        for _ in range(4):  # each a new connection: the kernel picks the worker
            with httpx.Client(base_url=server.url, timeout=30) as client:
                for _ in range(REQUESTS):
                    assert client.get("/healthz").json()["ok"] is True
                stream = client.get("/healthz").extensions["network_stream"]
                peer_port = stream.get_extra_info("socket").getsockname()[1]
                accepted = _accepted(server, peer_port)
                try:
                    assert len(accepted) == 1
                    assert _nodelay(accepted[0])
                finally:
                    for sock in accepted:
                        sock.close()
    finally:
        server.stop()
