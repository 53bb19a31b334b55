"""Every ``localpay`` command: one module per command group, ``bench/`` for benchmarks.

This package is a leaf: it imports the library, and nothing in the library imports it.
"""

from localpay.cli.main import cli, main

__all__ = ["cli", "main"]
