"""The central service's deploy files: the systemd unit passes ``systemd-analyze verify``
(and its offline security review), runs a real command, and is hardened; the nginx
example is parsed here (nginx itself is not installed where the suite runs) and checked for
TLS, the untouched signed request, the request id, and a closed ``/metrics``."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from central.mpm_payments import MAX_WAIT_S
from localpay.cli import cli

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNIT = DEPLOY / "localpay-central.service"
NGINX = DEPLOY / "nginx-central.conf"


def unit_sections() -> configparser.ConfigParser:
    # systemd allows a key more than once (SystemCallFilter): keep the last, as read here
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(UNIT)
    return unit


def test_central_unit_verifies(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is needed to check the unit"
    # The unit names the installed program; here the same unit runs this checkout's.
    local = Path(sys.executable).with_name("localpay")
    assert local.exists()
    text = UNIT.read_text().replace("ExecStart=/opt/localpay/.venv/bin/localpay",
                                    f"ExecStart={local}")
    assert text != UNIT.read_text()
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    done = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    # an unknown or misspelt key is only a warning: any output at all fails
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    review = subprocess.run([tool, "security", "--offline=true", str(copy)],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", review.stdout)
    assert score is not None, review.stdout + review.stderr
    assert float(score.group(1)) <= 2.0, review.stdout


def test_central_unit_runs_a_real_command_hardened() -> None:
    service = unit_sections()["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "/opt/localpay/.venv/bin/localpay"
    assert argv[1:3] == ["central", "serve"]
    # the same arguments, with --help, are accepted by the CLI as it is now
    result = CliRunner().invoke(cli, [*argv[1:], "--help"])
    assert result.exit_code == 0, result.output
    # loopback only: TLS and the outside world are the reverse proxy's
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    # the proxy on this host names the enrolling client (X-Forwarded-For)
    assert argv[argv.index("--trusted-proxy") + 1] == "127.0.0.1"
    data = argv[argv.index("--data") + 1]
    assert data == "/var/lib/" + service["StateDirectory"]
    assert service["ReadWritePaths"] == data
    for key, want in {"DynamicUser": "yes", "NoNewPrivileges": "yes",
                      "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                      "PrivateDevices": "yes", "CapabilityBoundingSet": "",
                      "RestrictSUIDSGID": "yes", "UMask": "0077",
                      "StateDirectoryMode": "0700", "Restart": "on-failure"}.items():
        assert service.get(key) == want, key
    # no secret on the command line: the metrics token comes from the environment file
    assert "--metrics-token" not in argv and "password" not in service["ExecStart"]
    assert service["EnvironmentFile"].startswith("-/etc/")
    assert unit_sections()["Install"]["WantedBy"] == "multi-user.target"


def parse_nginx(text: str) -> list[tuple[str, list[str], list | None]]:
    """nginx's grammar: ``name args;`` or ``name args { ... }``, ``#`` comments, quoted
    strings. Returns (name, args, children or None); raises on unbalanced braces or a
    directive without its ``;``."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'|[{};]|[^\s{};"\']+',
                        re.sub(r"(?m)#.*$", "", text))

    def block(pos: int, top: bool) -> tuple[list[tuple[str, list[str], list | None]], int]:
        out: list[tuple[str, list[str], list | None]] = []
        words: list[str] = []
        while pos < len(tokens):
            tok = tokens[pos]
            pos += 1
            if tok == ";":
                assert words, "an empty directive"
                out.append((words[0], words[1:], None))
                words = []
            elif tok == "{":
                assert words, "a block without a name"
                children, pos = block(pos, False)
                out.append((words[0], words[1:], children))
                words = []
            elif tok == "}":
                assert not top, "a } too many"
                assert not words, f"{words} lacks its ;"
                return out, pos
            else:
                words.append(tok.strip("\"'"))
        assert top, "a block is not closed"
        assert not words, f"{words} lacks its ;"
        return out, pos

    return block(0, True)[0]


#: every directive the file may use, by the context it is in (a typo is an unknown name)
KNOWN = {"upstream", "server", "keepalive", "map", "listen", "server_name", "return",
         "ssl_certificate", "ssl_certificate_key", "ssl_protocols",
         "ssl_prefer_server_ciphers", "ssl_session_cache", "ssl_session_timeout",
         "ssl_session_tickets", "add_header", "client_max_body_size", "server_tokens",
         "access_log", "location", "proxy_pass", "proxy_http_version", "proxy_set_header",
         "proxy_read_timeout", "proxy_request_buffering", "allow", "deny", "default"}


def walk(tree: list, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str, list]]:
    out = []
    for name, args, children in tree:
        out.append((path, name, args))
        if children is not None:
            out.extend(walk(children, (*path, name)))
    return out


def directives(tree: list, name: str) -> list[list[str]]:
    return [args for n, args, _ in tree if n == name]


def test_nginx_example_is_well_formed_and_safe() -> None:
    tree = parse_nginx(NGINX.read_text())
    for path, name, _ in walk(tree):
        if path and path[-1] == "map":
            continue  # a map's lines are its own table
        assert name in KNOWN, f"unknown directive {name!r} in {path}"
    # included into nginx's http block: only these at the top
    assert {n for n, _, _ in tree} == {"upstream", "server", "map"}
    upstream = next(c for n, a, c in tree if n == "upstream")
    assert directives(upstream, "server") == [["127.0.0.1:8470"]]
    # the unit's address is the upstream's
    argv = shlex.split(unit_sections()["Service"]["ExecStart"])
    assert f"{argv[argv.index('--host') + 1]}:{argv[argv.index('--port') + 1]}" == "127.0.0.1:8470"
    servers = [c for n, _, c in tree if n == "server"]
    plain = next(s for s in servers if ["80"] in directives(s, "listen"))
    assert directives(plain, "return") == [["301", "https://$host$request_uri"]]
    tls = next(s for s in servers if ["443", "ssl"] in directives(s, "listen"))
    assert directives(tls, "ssl_certificate") and directives(tls, "ssl_certificate_key")
    protocols = directives(tls, "ssl_protocols")[0]
    assert protocols and set(protocols) <= {"TLSv1.2", "TLSv1.3"}
    assert directives(tls, "client_max_body_size")
    locations = {" ".join(a): c for n, a, c in tls if n == "location"}
    assert set(locations) == {"/", "= /healthz", "= /readyz", "= /metrics"}
    for where, body in locations.items():
        # no URI part: the path and query a terminal signed reach the service unchanged
        assert directives(body, "proxy_pass") == [["http://localpay_central"]], where
        assert ["X-Request-ID", "$request_id"] in directives(body, "proxy_set_header"), where
    root = locations["/"]
    # a till's long-poll for its QR payment must not be cut by the proxy
    timeout = directives(root, "proxy_read_timeout")[0][0]
    assert int(timeout.removesuffix("s")) > MAX_WAIT_S
    # /metrics: some addresses allowed, then everyone else denied, before the proxy
    metrics = locations["= /metrics"]
    access = [(n, a) for n, a, _ in metrics if n in ("allow", "deny")]
    assert access[-1] == ("deny", ["all"]) and len(access) >= 2
    assert all(n == "allow" for n, _ in access[:-1])
