"""Encryption at rest: round trip, rotation with MultiFernet, clear errors for bad or wrong keys."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from gateway_core.crypto import PayloadCipher, key_file_path, load_cipher
from gateway_core.errors import ConfigError
from gateway_core.settings import Settings

SECRET = "card 4111 1111 1111 1111 belongs to Jane Roe, jane@example.com"


def test_round_trip_and_ciphertext_hides_the_plaintext() -> None:
    cipher = PayloadCipher([Fernet.generate_key()])
    token = cipher.encrypt(SECRET)
    assert isinstance(token, bytes)
    assert SECRET.encode() not in token
    assert b"4111 1111" not in token and b"jane" not in token
    assert cipher.decrypt(token) == SECRET


def test_unicode_and_empty_round_trip() -> None:
    cipher = PayloadCipher([Fernet.generate_key()])
    for text in ("", "Grüße, 東京 🚀", "x" * 100_000):
        assert cipher.decrypt(cipher.encrypt(text)) == text


def test_same_plaintext_encrypts_differently_each_time() -> None:
    cipher = PayloadCipher([Fernet.generate_key()])
    assert cipher.encrypt(SECRET) != cipher.encrypt(SECRET)


def test_rotation_new_key_first_old_tokens_still_decrypt() -> None:
    old_key, new_key = Fernet.generate_key(), Fernet.generate_key()
    old_token = PayloadCipher([old_key]).encrypt(SECRET)

    rotated = PayloadCipher([new_key, old_key])
    assert rotated.decrypt(old_token) == SECRET

    # new writes use the first (new) key: readable with the new key alone, not with the old one
    new_token = rotated.encrypt(SECRET)
    assert PayloadCipher([new_key]).decrypt(new_token) == SECRET
    with pytest.raises(ValueError):
        PayloadCipher([old_key]).decrypt(new_token)

    # rotate() re-encrypts an old token under the new key, so the old key can then be retired
    re_encrypted = rotated.rotate(old_token)
    assert PayloadCipher([new_key]).decrypt(re_encrypted) == SECRET


@pytest.mark.parametrize("bad", [b"not-a-key", b"", b"A" * 43, Fernet.generate_key()[:-2]])
def test_malformed_key_says_how_to_make_one(bad: bytes) -> None:
    with pytest.raises(ConfigError) as caught:
        PayloadCipher([Fernet.generate_key(), bad])
    message = str(caught.value)
    assert "FEDGATE_ENCRYPTION_KEYS" in message
    assert "malformed" in message
    assert "Fernet.generate_key()" in message
    assert "\n" not in message


def test_no_key_at_all_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match="FEDGATE_ENCRYPTION_KEYS"):
        PayloadCipher([])


def test_wrong_key_gives_value_error_without_plaintext() -> None:
    token = PayloadCipher([Fernet.generate_key()]).encrypt(SECRET)
    with pytest.raises(ValueError) as caught:
        PayloadCipher([Fernet.generate_key()]).decrypt(token)
    assert type(caught.value) is ValueError
    assert "cannot be decrypted" in str(caught.value)
    text = f"{caught.value!s} {caught.value!r} {caught.value.__cause__!r}"
    for fragment in ("4111 1111", "Jane", "jane@example.com"):
        assert fragment not in text


def test_tampered_token_is_refused() -> None:
    cipher = PayloadCipher([Fernet.generate_key()])
    token = bytearray(cipher.encrypt(SECRET))
    token[-5] = ord("A") if token[-5] != ord("A") else ord("B")
    with pytest.raises(ValueError, match="cannot be decrypted"):
        cipher.decrypt(bytes(token))


def test_load_cipher_from_comma_separated_keys(tmp_path: Path) -> None:
    old_key, new_key = Fernet.generate_key(), Fernet.generate_key()
    old_token = PayloadCipher([old_key]).encrypt(SECRET)
    settings = Settings(home=tmp_path, encryption_keys=f" {new_key.decode()} , {old_key.decode()} ,")
    cipher = load_cipher(settings)
    assert cipher.decrypt(old_token) == SECRET
    assert PayloadCipher([new_key]).decrypt(cipher.encrypt("x")) == "x"
    assert not key_file_path(settings).exists()  # keys from settings: nothing written to disk


def test_load_cipher_creates_a_private_key_file_once(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", encryption_keys=None)
    first = load_cipher(settings)
    path = key_file_path(settings)
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no temp file left behind
    token = first.encrypt(SECRET)
    assert load_cipher(settings).decrypt(token) == SECRET  # the second load reuses the same key
