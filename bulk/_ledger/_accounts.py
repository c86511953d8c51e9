"""Writing accounts and API keys: create, grant credits, add and revoke keys.

API keys are shown once and stored as SHA-256 hashes (with a short display
prefix); at most ``MAX_KEYS_PER_ACCOUNT`` are active per account. Credits enter an
account only as ``grant`` events (the balance follows by trigger).
"""

from __future__ import annotations

import secrets
import sqlite3

from .._exceptions import EmailTaken, KeyLimitReached, ValidationError
from ._connection import LedgerCore, immediate
from ._reads import account_row, hash_key
from ._records import KEY_PREFIX, MAX_KEYS_PER_ACCOUNT, Account, iso

__all__ = ["AccountWrites"]


def _grant(conn: sqlite3.Connection, account_id: int, credits: int, now: str | None) -> None:
    conn.execute(
        "INSERT INTO credit_events (account_id, kind, amount, created_at) "
        "VALUES (?, 'grant', ?, ?)",
        (account_id, credits, now),
    )


def _insert_key(conn: sqlite3.Connection, account_id: int, key: str, now: str | None) -> int:
    cur = conn.execute(
        "INSERT INTO api_keys (account_id, key_hash, prefix, created_at) VALUES (?, ?, ?, ?)",
        (account_id, hash_key(key), key[: len(KEY_PREFIX) + 6], now),
    )
    return int(cur.lastrowid or 0)


class AccountWrites(LedgerCore):
    """The account and key operations of ``Ledger`` (through the writer task)."""

    async def create_account(
        self, *, credits: int, email: str | None = None, plan: str = "free"
    ) -> tuple[Account, str]:
        """Create an account with ``credits`` granted and its first API key.

        Returns:
            The account and the API key, shown once (only its hash is stored).

        Raises:
            ValidationError: ``credits`` negative.
            EmailTaken: The email is already registered.
        """
        if credits < 0:
            raise ValidationError("credits must be >= 0", field="credits")
        key = KEY_PREFIX + secrets.token_hex(24)
        now = iso(self.clock())

        def tx(conn: sqlite3.Connection) -> Account:
            with immediate(conn):
                if (
                    email is not None
                    and conn.execute("SELECT 1 FROM accounts WHERE email = ?", (email,)).fetchone()
                ):
                    raise EmailTaken("this email is already registered", details={"field": "email"})
                cur = conn.execute(
                    "INSERT INTO accounts (email, plan, webhook_secret, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (email, plan, "whsec_" + secrets.token_hex(24), now),
                )
                account_id = int(cur.lastrowid or 0)
                if credits:
                    _grant(conn, account_id, credits, now)
                key_id = _insert_key(conn, account_id, key, now)
                return account_row(conn, account_id, key_id)

        return await self._write(tx), key

    async def create_key(self, account_id: int) -> str:
        """Another API key for the account (at most 5 active).

        Raises:
            KeyLimitReached: The account already has 5 active keys.
        """
        key = KEY_PREFIX + secrets.token_hex(24)
        now = iso(self.clock())

        def tx(conn: sqlite3.Connection) -> None:
            with immediate(conn):
                (active,) = conn.execute(
                    "SELECT COUNT(*) FROM api_keys WHERE account_id = ? AND active = 1",
                    (account_id,),
                ).fetchone()
                if active >= MAX_KEYS_PER_ACCOUNT:
                    raise KeyLimitReached(
                        f"an account can have at most {MAX_KEYS_PER_ACCOUNT} active API keys"
                    )
                _insert_key(conn, account_id, key, now)

        await self._write(tx)
        return key

    async def revoke_key(self, key: str, *, account_id: int | None = None) -> bool:
        """Deactivate a key (given whole, or by its display prefix with ``account_id``).

        Returns:
            Whether an active key was deactivated.
        """
        now = iso(self.clock())

        def tx(conn: sqlite3.Connection) -> bool:
            with immediate(conn):
                if account_id is None:
                    cur = conn.execute(
                        "UPDATE api_keys SET active = 0, revoked_at = ? "
                        "WHERE key_hash = ? AND active = 1",
                        (now, hash_key(key)),
                    )
                else:
                    cur = conn.execute(
                        "UPDATE api_keys SET active = 0, revoked_at = ? WHERE account_id = ? "
                        "AND active = 1 AND (key_hash = ? OR prefix = ?)",
                        (now, account_id, hash_key(key), key),
                    )
                return cur.rowcount > 0

        return await self._write(tx)

    async def grant(self, account_id: int, credits: int) -> Account:
        """Add ``credits`` to an account (a ``grant`` event).

        Raises:
            ValidationError: ``credits`` < 1.
        """
        if credits < 1:
            raise ValidationError("credits must be >= 1", field="credits")
        now = iso(self.clock())

        def tx(conn: sqlite3.Connection) -> Account:
            with immediate(conn):
                _grant(conn, account_id, credits, now)
                return account_row(conn, account_id, None)

        return await self._write(tx)
