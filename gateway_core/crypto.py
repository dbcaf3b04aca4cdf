"""Encryption at rest for prompts, outputs and placeholder maps (Fernet, rotatable with MultiFernet)."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from gateway_core.errors import ConfigError
from gateway_core.settings import Settings


class PayloadCipher:
    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ConfigError("no encryption key: set FEDGATE_ENCRYPTION_KEYS or let FEDGATE_HOME hold secret.key")
        self._primary = keys[0]
        try:
            self._fernet = MultiFernet([Fernet(k) for k in keys])
        except ValueError as exc:
            raise ConfigError(
                "FEDGATE_ENCRYPTION_KEYS holds a malformed key: each must be 32 url-safe base64 bytes "
                "(make one with `python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key())'`)"
            ) from exc

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode())

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken as exc:
            raise ValueError("stored payload cannot be decrypted with the configured keys") from exc

    def derive(self, label: str) -> str:
        """A stable secret for `label` (e.g. a tenant's hashing salt), derived from the primary key."""
        return hmac.new(self._primary, label.encode(), hashlib.sha256).hexdigest()[:32]

    def rotate(self, token: bytes) -> bytes:
        return self._fernet.rotate(token)


def key_file_path(settings: Settings) -> Path:
    return settings.home_dir() / "secret.key"


def load_cipher(settings: Settings) -> PayloadCipher:
    if settings.encryption_keys:
        return PayloadCipher([k.strip().encode() for k in settings.encryption_keys.split(",") if k.strip()])
    path = key_file_path(settings)
    if not path.exists():
        # Write then hard-link, so a process starting alongside never reads a half-written key.
        tmp = path.with_name(f".secret.key.{os.getpid()}")
        tmp.write_bytes(Fernet.generate_key())
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return PayloadCipher([path.read_bytes().strip()])
