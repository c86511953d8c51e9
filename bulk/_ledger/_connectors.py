"""Connectors of an account (schema m010): create, list, delete, new token, by token.

A connector's token (``pxc_...``) is shown once and stored as its SHA-256 hash, like
an API key; a new token replaces the hash, so the old one stops working at once. A
deleted connector keeps its row (its id may label old jobs) with no token. Every
operation that names a connector takes the caller's account: another account's
connector is answered exactly as a missing one (``None``).
"""

from __future__ import annotations

import hmac
import secrets
import sqlite3
from typing import Final

import attrs

from .._exceptions import ValidationError
from ._connection import LedgerCore, immediate
from ._reads import hash_key
from ._records import iso

__all__ = ["CONNECTOR_TOKEN_PREFIX", "MAX_CONNECTORS", "ConnectorRow", "ConnectorWrites"]

CONNECTOR_TOKEN_PREFIX: Final = "pxc_"
CONNECTOR_ID_PREFIX: Final = "conn_"
#: Connectors an account may have at once (deleted ones do not count).
MAX_CONNECTORS: Final = 25
_COLUMNS: Final = "id, account_id, name, created_at, last_seen"


@attrs.frozen(kw_only=True)
class ConnectorRow:
    """A connector as the ledger keeps it (never its token).

    Attributes:
        id: ``conn_<random>``.
        account_id: The account it captures for.
        name: What its owner called it.
        created_at: ISO time of creation.
        last_seen: ISO time its tunnel was last up (None: never).
    """

    id: str
    account_id: int
    name: str
    created_at: str
    last_seen: str | None


def _row(row: sqlite3.Row) -> ConnectorRow:
    return ConnectorRow(
        id=row["id"],
        account_id=row["account_id"],
        name=row["name"],
        created_at=row["created_at"],
        last_seen=row["last_seen"],
    )


def new_connector_token() -> str:
    """A connector token: ``pxc_`` and 192 random bits (hex)."""
    return CONNECTOR_TOKEN_PREFIX + secrets.token_hex(24)


class ConnectorWrites(LedgerCore):
    """The connector operations of ``Ledger``."""

    async def create_connector(self, account_id: int, name: str) -> tuple[ConnectorRow, str]:
        """A new connector of ``account_id`` called ``name``; it and its token (shown once).

        Raises:
            ValidationError: The account already has ``MAX_CONNECTORS``.
        """
        token = new_connector_token()
        connector_id = CONNECTOR_ID_PREFIX + secrets.token_hex(8)
        now = iso(self.clock())

        def tx(conn: sqlite3.Connection) -> ConnectorRow:
            with immediate(conn):
                (count,) = conn.execute(
                    "SELECT COUNT(*) FROM connectors WHERE account_id = ? AND deleted_at IS NULL",
                    (account_id,),
                ).fetchone()
                if count >= MAX_CONNECTORS:
                    raise ValidationError(
                        f"an account can have at most {MAX_CONNECTORS} connectors", field="name"
                    )
                conn.execute(
                    "INSERT INTO connectors (id, account_id, name, token_hash, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (connector_id, account_id, name, hash_key(token), now),
                )
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM connectors WHERE id = ?", (connector_id,)
                ).fetchone()
                return _row(row)

        return await self._write(tx), token

    async def connectors(self, account_id: int) -> list[ConnectorRow]:
        """The account's connectors (not deleted), oldest first."""

        def read(conn: sqlite3.Connection) -> list[ConnectorRow]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM connectors WHERE account_id = ? AND deleted_at IS NULL "
                "ORDER BY created_at, id",
                (account_id,),
            ).fetchall()
            return [_row(r) for r in rows]

        return await self._read(read)

    async def connector(self, account_id: int, connector_id: str) -> ConnectorRow | None:
        """The account's connector ``connector_id`` (None: missing, deleted or another's)."""

        def read(conn: sqlite3.Connection) -> ConnectorRow | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM connectors WHERE id = ? AND account_id = ? "
                "AND deleted_at IS NULL",
                (connector_id, account_id),
            ).fetchone()
            return None if row is None else _row(row)

        return await self._read(read)

    async def connector_by_token(self, token: str) -> ConnectorRow | None:
        """The live connector whose token is ``token`` (None: no such, replaced, deleted)."""
        digest = hash_key(token)

        def read(conn: sqlite3.Connection) -> ConnectorRow | None:
            row = conn.execute(
                f"SELECT {_COLUMNS}, token_hash FROM connectors WHERE token_hash = ?", (digest,)
            ).fetchone()
            if row is None or not hmac.compare_digest(row["token_hash"], digest):
                return None
            return _row(row)

        return await self._read(read)

    async def delete_connector(self, account_id: int, connector_id: str) -> bool:
        """Delete the account's connector (its token stops working); False: not found."""
        now = iso(self.clock())

        def tx(conn: sqlite3.Connection) -> bool:
            with immediate(conn):
                cur = conn.execute(
                    "UPDATE connectors SET token_hash = NULL, deleted_at = ? "
                    "WHERE id = ? AND account_id = ? AND deleted_at IS NULL",
                    (now, connector_id, account_id),
                )
                return cur.rowcount == 1

        return await self._write(tx)

    async def regenerate_connector_token(self, account_id: int, connector_id: str) -> str | None:
        """A new token for the account's connector (the old one stops working); None:
        not found."""
        token = new_connector_token()

        def tx(conn: sqlite3.Connection) -> bool:
            with immediate(conn):
                cur = conn.execute(
                    "UPDATE connectors SET token_hash = ? "
                    "WHERE id = ? AND account_id = ? AND deleted_at IS NULL",
                    (hash_key(token), connector_id, account_id),
                )
                return cur.rowcount == 1

        return token if await self._write(tx) else None

    async def connector_seen(self, connector_id: str) -> None:
        """Record that the connector's tunnel is up now (``last_seen``)."""
        now = iso(self.clock())

        def tx(conn: sqlite3.Connection) -> None:
            with immediate(conn):
                conn.execute(
                    "UPDATE connectors SET last_seen = ? WHERE id = ? AND deleted_at IS NULL",
                    (now, connector_id),
                )

        await self._write(tx)
