"""The deploy/ files: the systemd unit runs a real localpay command; udev rules parse."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

from click.testing import CliRunner

from localpay.cli import cli

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_systemd_unit_starts_a_real_command() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "localpay.service")
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/localpay")
    # The same arguments, with --help, must be accepted by the CLI as it is now.
    result = CliRunner().invoke(cli, [*argv[1:], "--help"])
    assert result.exit_code == 0, result.output
    text = (DEPLOY / "localpay.service").read_text()
    assert "Environment=LOCALPAY_HOME=/var/lib/localpay" in text


RULE = re.compile(r'^(?:[A-Z_]+(?:\{[A-Za-z_]+\})?(?:==|!=|\+=|=)"[^"]*"(?:, )?)+$')


def test_udev_rules_are_well_formed() -> None:
    rules = [line for line in (DEPLOY / "99-localpay-readers.rules").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert len(rules) >= 6
    for line in rules:
        assert RULE.match(line), f"malformed udev rule: {line}"
    text = "\n".join(rules)
    for vendor, product in (("072f", "2200"), ("072f", "223b"), ("04e6", "5591")):
        assert f'ATTRS{{idVendor}}=="{vendor}", ATTRS{{idProduct}}=="{product}"' in text
    assert 'KERNEL=="ttyAMA0"' in text
