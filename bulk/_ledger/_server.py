"""Secrets of the server itself, kept in the ledger file (schema m008).

The dashboard signs its session cookies with a key that must outlive restarts and be
the same for every process serving one database: so it lives in the database, made
by the first process that asks for it. Unlike the jobs' cookie and header values
(``_secrets``), it protects nothing outside this server: whoever can read the
database file can already act as any account.
"""

from __future__ import annotations

import secrets
import sqlite3

from ._connection import LedgerCore, immediate
from ._records import iso

__all__ = ["ServerSecrets"]


class ServerSecrets(LedgerCore):
    """The server-secret operation of ``Ledger``."""

    async def server_secret(self, name: str) -> str:
        """The secret called ``name``, made (256 random bits, hex) on first use.

        Two processes asking at once get the same value: the insert is ``OR IGNORE``
        and the value is read back in the same write transaction.
        """
        fresh = secrets.token_hex(32)
        now = iso(self.clock())

        def tx(conn: sqlite3.Connection) -> str:
            with immediate(conn):
                conn.execute(
                    "INSERT OR IGNORE INTO server_secrets (name, value, created_at) "
                    "VALUES (?, ?, ?)",
                    (name, fresh, now),
                )
                (value,) = conn.execute(
                    "SELECT value FROM server_secrets WHERE name = ?", (name,)
                ).fetchone()
                return str(value)

        return await self._write(tx)
