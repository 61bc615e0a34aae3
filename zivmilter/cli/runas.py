"""Root must not write the store of the service user: commands that write the store refuse, as
root, when the store (or, before it exists, its key file) belongs to another user, and name the
`runuser` command to use. A store file root made would be unwritable for the milter and portal.

The commands that only read it (cli/__init__.py's `_READS_ONLY`: status, account list, ...) run
as root: they open the store read-only, which creates no file but SQLite's -wal and -shm (when
no writer has the store open), and SQLite, run as root, gives those to the database file's owner
(its unix VFS chowns them; tests/test_cli_runas.py checks the owners). PostgreSQL's read-only
sessions make no local file.

cli/__init__.py calls `check_store_user` before a writing command runs; nothing here touches the
store.
"""

from __future__ import annotations

import os
import pwd
import shlex
from collections.abc import Sequence

from zivmilter.errors import ZivmilterError


def _owner(path: str) -> int | None:
    try:
        return os.stat(path).st_uid
    except OSError:
        return None


def store_user(store_path: str, key_file: str) -> int | None:
    """The uid the store belongs to: its folder's owner, or before it exists its key's owner."""
    uid = _owner(store_path)
    return uid if uid is not None else _owner(key_file)


def check_store_user(
    store_path: str, key_file: str, argv: Sequence[str], *, euid: int | None = None
) -> None:
    """Raise (one line: the `runuser` command) when root would write another user's store."""
    if (os.geteuid() if euid is None else euid) != 0:
        return  # a user without root cannot leave root's files behind
    uid = store_user(store_path, key_file)
    if uid is None or uid == 0:
        return  # root's own store (tests, single-user setups), or nothing to go by
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)  # runuser takes a name only; the message still says whose it is
    command = shlex.join(["runuser", "-u", name, "--", "zivmilter", *argv])
    raise ZivmilterError(
        f"{store_path} belongs to {name}: run this as {name}, not as root "
        f"(files root makes there would lock {name} out): {command}"
    )
