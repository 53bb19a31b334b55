"""The one exception tree of localpay.

Every error that crosses a package boundary is one of these, so callers can catch
``LocalpayError`` and know they have seen everything that this code raises on purpose.
Each branch also mixes in the nearest builtin, so ``except ValueError`` or
``except TimeoutError`` keeps working for code that does not know our names::

    LocalpayError
    ├── ConfigError (ValueError)             bad config file, missing or unreadable key
    │   └── KeyFileError
    ├── LedgerError                          the offline ledger
    │   ├── LedgerCorruptError               broken chain / bad signature / unreadable file
    │   ├── LedgerWriteError (OSError)       could not commit (disk full, I/O error)
    │   ├── LedgerStateError                 misuse: append-only violation, bad prune
    │   └── LedgerInUseError                 another process writes it (terminal.owner)
    ├── ReaderError (OSError)                card readers and code scanners
    │   ├── ReaderTimeoutError (TimeoutError)
    │   ├── CardRemovedError                 the card left the field mid-transaction
    │   └── ReaderUnavailableError           no such reader, backend missing, no service
    ├── PrinterError (OSError)               receipt printers (a payment stands without one)
    │   ├── PrinterUnavailableError          no such printer, cannot open, backend missing
    │   ├── PrinterOfflineError              offline, cover open, or no answer to DLE EOT
    │   └── PrinterPaperOutError             out of paper
    ├── ParseError (ValueError)              any malformed input from outside
    │   ├── TLVError                         BER-TLV
    │   ├── APDUError                        APDU responses / status words
    │   ├── QRFormatError                    QR payloads (MPM, CPM, wallet)
    │   ├── EntryEncodingError               a ledger entry's canonical bytes
    │   └── ScanError                        scanner lines
    ├── SyncError                            batches, the central chain, proofs
    │   ├── SyncProtocolError (ValueError)   malformed request or answer
    │   ├── ChainMismatchError               gap, fork or tampered batch
    │   ├── ProofError                       inclusion / consistency proof does not verify
    │   ├── SyncAuthError (PermissionError)  unknown terminal, bad request signature, replay
    │   │   └── SyncStaleError               the request's time is too far from the service's
    │   └── SyncUnavailableError (ConnectionError)  central service or its store unreachable
    ├── TransactionError                     a transaction that cannot proceed (not a decline)
    └── BooksError                           central's double-entry books refuse a transfer

A *decline* is not an error: it is a normal outcome with a reason code, see
``terminal.risk``.
"""

from __future__ import annotations


class LocalpayError(Exception):
    """Root of every error localpay raises on purpose."""


class ConfigError(LocalpayError, ValueError):
    """A configuration value, file or key is missing or invalid."""


class KeyFileError(ConfigError):
    """A key file is missing, unreadable, has loose permissions or bad contents."""


class LedgerError(LocalpayError):
    """Something about the offline ledger."""


class LedgerCorruptError(LedgerError):
    """The ledger is not what was written: broken chain, bad signature or bad file.

    ``seq`` is the first bad sequence number when one is known.
    """

    def __init__(self, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq


class LedgerWriteError(LedgerError, OSError):
    """An entry could not be made durable (disk full, I/O error, read-only file)."""


class LedgerStateError(LedgerError):
    """The ledger was asked for something it refuses (update, delete, bad prune)."""


class ReaderError(LocalpayError, OSError):
    """A card reader or code scanner failed."""


class ReaderTimeoutError(ReaderError, TimeoutError):
    """Nothing was presented, or the card did not answer, in time."""


class CardRemovedError(ReaderError):
    """The card left the field before the transaction finished."""


class ReaderUnavailableError(ReaderError):
    """The reader does not exist, its backend is not installed or its service is down."""


class PrinterError(LocalpayError, OSError):
    """A receipt printer failed. Never a reason to decline: the payment stands and the
    receipt can be printed again from the ledger (``localpay receipt print SEQ``).

    ``fault`` is the short words the clerk sees ("out of paper", "offline", "missing").
    """

    fault = "printer fault"


class PrinterUnavailableError(PrinterError):
    """The printer does not exist, cannot be opened or its backend is not installed."""

    fault = "missing"


class PrinterOfflineError(PrinterError):
    """The printer is offline (cover open, error state) or does not answer its status."""

    fault = "offline"


class PrinterPaperOutError(PrinterError):
    """The printer's paper roll is at its end."""

    fault = "out of paper"


class ParseError(LocalpayError, ValueError):
    """Input from outside is malformed."""


class TLVError(ParseError):
    """Malformed BER-TLV."""


class APDUError(ParseError):
    """A malformed APDU response or an unexpected status word."""


class QRFormatError(ParseError):
    """A QR payload that is not a valid code of its format."""


class EntryEncodingError(ParseError):
    """Bytes that are not a canonical ledger entry, or fields that cannot be encoded."""


class ScanError(ParseError):
    """A scanner line that is not a usable code."""


class SyncError(LocalpayError):
    """Something about syncing with the central service."""


class SyncProtocolError(SyncError, ValueError):
    """A malformed request or answer."""


class RouteMissingError(SyncProtocolError):
    """The central service has no such route (an unsigned 404: a release from before it)."""


class ChainMismatchError(SyncError):
    """A batch does not continue the chain: a gap, a fork or tampering.

    ``seq`` is the first offending sequence number when one is known.
    """

    def __init__(self, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq


class ProofError(SyncError):
    """An inclusion or consistency proof, or a checkpoint signature, does not verify."""


class SyncAuthError(SyncError, PermissionError):
    """The central service refuses who is asking: unknown terminal, bad signature, replay."""


class SyncStaleError(SyncAuthError):
    """The service refused a request as stale: the terminal's clock is far from its own."""


class SyncUnavailableError(SyncError, ConnectionError):
    """The central service or its store cannot be reached now; worth trying again later."""


class TransactionError(LocalpayError):
    """A transaction cannot proceed (wrong state, unknown reference); not a decline."""


class BooksError(LocalpayError):
    """The central books refuse a movement of money: an account that may not go below zero
    would, an account is unknown or closed, or a reference is reused with other details.
    Nothing of the refused movement is written."""
