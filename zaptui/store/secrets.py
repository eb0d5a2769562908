"""Encryption at rest for Klaviyo private keys and the ZAP~POST API password.

The key comes from ZAPTUI_SECRET_KEY (a Fernet key, for servers sharing one
PostgreSQL database) or from a key file created once with mode 0600.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
from cryptography.fernet import Fernet, InvalidToken


class SecretKeyError(RuntimeError):
    """The encryption key is missing, malformed or does not fit the data."""


def default_key_path() -> Path:
    """Where the key file lives when ZAPTUI_SECRET_KEY is not set."""
    explicit = os.environ.get("ZAPTUI_SECRET_KEY_FILE")
    if explicit:
        return Path(explicit)
    return Path(platformdirs.user_config_dir("zaptui")) / "secret.key"


def _load_or_create_key(path: Path) -> bytes:
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


class SecretBox:
    """Encrypts and decrypts short secrets with one Fernet key."""

    def __init__(self, key: bytes | str | None = None) -> None:
        if key is None:
            env_key = os.environ.get("ZAPTUI_SECRET_KEY")
            key = (
                env_key.encode() if env_key else _load_or_create_key(default_key_path())
            )
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError) as error:
            raise SecretKeyError(
                "the secret key is not a valid Fernet key: "
                "generate one with `zaptui secret-key`"
            ) from error

    def encrypt(self, plaintext: str) -> str:
        """Encrypt a secret for storage."""
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        """Decrypt a stored secret."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as error:
            raise SecretKeyError(
                "a stored secret cannot be decrypted with this key: set "
                "ZAPTUI_SECRET_KEY to the key the database was written with"
            ) from error


def new_key() -> str:
    """A fresh key to put in ZAPTUI_SECRET_KEY."""
    return Fernet.generate_key().decode()
