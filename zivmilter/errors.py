"""The one exception root of zivmilter.

Expected outcomes (a recipient fails, an MX is too weak, a directive line is invalid) are values,
never exceptions. Exceptions are for faults, and all of them derive from one root::

    ZivmilterError
    ├── ConfigError      a configuration or facts file is unreadable or invalid (names file + key)
    ├── MessageError     input that is not an RFC 5322 message, or an unusable address
    ├── StoreError       the encrypted store cannot be read or written; the milter tempfails
    │   └── KeyFileError the key-encryption key is missing, malformed or too widely readable
    ├── DeliveryError    re-injection or DSN submission to the MTA failed; the milter tempfails
    ├── ProbeError       internal fault of the transport prober (network outcomes are values)
    └── ReaderError      the attachments' text reader (a child process) did not start; the
                         milter tempfails (an attachment it cannot read is a value, not this)
"""

from __future__ import annotations


class ZivmilterError(Exception):
    """Root of every exception zivmilter raises on purpose."""


class ConfigError(ZivmilterError):
    """A configuration (or facts) file is unreadable or has an invalid key or value.

    The message always names the file and, where there is one, the key path.
    """

    def __init__(self, file: str, key: str | None, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {problem}")


class MessageError(ZivmilterError):
    """Input is not a usable message or address."""


class StoreError(ZivmilterError):
    """The encrypted store failed; nothing may be accepted."""


class KeyFileError(StoreError):
    """The key-encryption key file is missing, malformed or readable by others."""


class DeliveryError(ZivmilterError):
    """Handing a message back to the MTA (re-injection, DSN) failed.

    `accepted` counts the messages of the batch the MTA had already taken (they will go out).
    `permanent`: the MTA refused the message for good (a 5xx reply); sending it again as it is
    cannot succeed.
    `uncertain`: a message of the batch that is not among the `accepted` ones was sent whole (its
    final "." written) but no reply came (connection lost, timeout): the MTA may have queued it,
    so whatever it points to must be kept. A clear 4xx/5xx refusal is not uncertain.
    A batch sent over several sessions at once (reinject.py) may end with several failures:
    `permanent` only when every one of them was a 5xx, `uncertain` when any was.
    """

    def __init__(
        self,
        message: str,
        accepted: int = 0,
        *,
        permanent: bool = False,
        uncertain: bool = False,
    ) -> None:
        super().__init__(message)
        self.accepted = accepted
        self.permanent = permanent
        self.uncertain = uncertain


class ProbeError(ZivmilterError):
    """An internal fault of the transport prober (not a network outcome)."""


class ReaderError(ZivmilterError):
    """The child process that reads attachments' text did not start (its server cannot run,
    or the child died or hung before it was ready): a fault of this host, not of the message,
    so the message waits (tempfail) rather than pass without the text its rules may need."""
