"""Cookie and header values of running jobs: sealed at rest, dropped when the job ends.

A job's capture options may carry credentials (``Cookie`` values, an
``Authorization`` header). The ledger keeps them only while the job runs:

- ``split_secrets`` takes them out of the options; the ``options`` column keeps the
  names with ``***`` for values (what manifests and logs may show);
- ``SecretBox.seal`` encrypts the values (AES-256-GCM, the job id as associated data,
  so a sealed value moved to another row does not open) into the ``secrets`` column;
- the key lives outside the database: a 0600 key file (``SecretBox.from_key_file``,
  created on first start in the service's data directory), so a job resumed after a
  restart still has its cookies, while a copy of the database alone reveals nothing;
- when the job ends (completed, failed, expired) a trigger clears ``secrets`` and
  masks ``options`` (schema m005).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .._exceptions import ValidationError

__all__ = ["MASK", "SecretBox", "merge_secrets", "split_secrets", "url_secret_id"]

log = logging.getLogger("bulk.ledger")

MASK: Final = "***"
_VERSION: Final = "v1."
_NONCE: Final = 12


def split_secrets(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate the secret values from capture options.

    Args:
        options: Options as ``CaptureOptions.to_json`` gives them.

    Returns:
        ``(masked, secret)``: the options with every cookie value and header value
        replaced by ``***``, and the original ``cookies``/``headers`` entries that
        held a value (empty when there is nothing to keep).
    """
    masked = dict(options)
    secret: dict[str, Any] = {}
    cookies = options.get("cookies")
    if isinstance(cookies, list) and cookies:
        secret["cookies"] = cookies
        masked["cookies"] = [
            {**c, "value": MASK} if isinstance(c, dict) else MASK for c in cookies
        ]
    headers = options.get("headers")
    if isinstance(headers, dict) and headers:
        secret["headers"] = headers
        masked["headers"] = dict.fromkeys(headers, MASK)
    return masked, secret


def url_secret_id(job_id: str, seq: int) -> str:
    """What a URL row's sealed values are bound to (a row's own, not its job's)."""
    return f"{job_id}#{seq}"


def merge_secrets(masked: Mapping[str, Any], secret: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of ``split_secrets``."""
    return {**masked, **secret}


@final
class SecretBox:
    """AES-256-GCM with one key; ``seal``/``open`` bind each value to its job id.

    Args:
        key: 32 random bytes.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValidationError("a SecretBox key is 32 bytes", field="key")
        self._aead = AESGCM(key)

    @classmethod
    def ephemeral(cls) -> SecretBox:
        """A key that lives only as long as this process (nothing on disk)."""
        return cls(AESGCM.generate_key(bit_length=256))

    @classmethod
    def from_key_file(cls, path: Path) -> SecretBox:
        """The key in ``path``, created (0600, atomically) when it does not exist.

        A key file readable by others is made 0600 again. Two processes creating the
        same file at once end with one key: it is written aside and linked in place,
        and the loser reads the winner's.

        Raises:
            OSError: The file cannot be created or read.
            ValidationError: The file does not hold a key (edited or truncated):
                refusing is safer than silently making a new key, which would leave
                the running jobs' secrets unreadable.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=256)))
                os.write(fd, b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("the key file %s was readable by others; it is 0600 now", path)
            path.chmod(0o600)
        try:
            key = base64.urlsafe_b64decode(path.read_bytes().strip())
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32:
            raise ValidationError(
                f"{path} does not hold a bulk key (32 bytes, base64)", field="key_file"
            )
        return cls(key)

    def seal(self, job_id: str, value: Mapping[str, Any]) -> str:
        """Encrypt ``value`` (JSON) for the job ``job_id``."""
        nonce = secrets.token_bytes(_NONCE)
        data = json.dumps(dict(value), separators=(",", ":")).encode()
        sealed = self._aead.encrypt(nonce, data, job_id.encode())
        return _VERSION + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, job_id: str, token: str) -> dict[str, Any] | None:
        """Decrypt what ``seal`` made for ``job_id``.

        Returns:
            The value, or None when it cannot be opened with this key (another key,
            another job's value, or a damaged one).
        """
        if not token.startswith(_VERSION):
            return None
        try:
            raw = base64.urlsafe_b64decode(token[len(_VERSION) :])
            data = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], job_id.encode())
            value = json.loads(data)
        except (binascii.Error, ValueError, InvalidTag):
            return None
        return value if isinstance(value, dict) else None
