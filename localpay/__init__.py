"""Shared pieces of localpay: the exception tree and the types every package may import."""

__version__ = "0.1.0"
