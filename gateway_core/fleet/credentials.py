"""Generated credentials kept in files under FEDGATE_HOME: the embedded Redis's password and Flower's login.

Each file is created with mode 0600 in one step (never readable by others, not even for an instant), holds one
secret a line, and is read by every process that needs it, so a secret never travels on a command line. Processes
`fedgate up` starts get the Redis password inside FEDGATE_REDIS_URL, in their environment.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from gateway_core.errors import ConfigError
from gateway_core.settings import Settings

REDIS_PASSWORD_FILE = "redis-password"
FLOWER_AUTH_FILE = "flower-auth"
FLOWER_USER = "operator"


def read_or_create(path: Path, make: Callable[[], str]) -> str:
    """The secret in `path`; when there is none, `make()` is written there first: into a file of mode 0600 that is
    then linked into place whole, so nobody ever reads it half-written or readable by others, and of two processes
    racing, both read what the first linked. A file others may read is made owner-only."""
    if not path.exists():
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(make() + "\n")
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        path.chmod(0o600)
    text = path.read_text().strip()
    if not text:
        raise ConfigError(f"{path} is empty: delete it to have a new secret generated, or write one into it")
    return text


def redis_password_file(settings: Settings) -> Path:
    return settings.home.expanduser() / REDIS_PASSWORD_FILE


def embedded_redis_password(settings: Settings, *, create: bool = False) -> str | None:
    """The embedded Redis's password (`requirepass`), generated on first start (`create`); None when there is none
    yet (a server that has never been started here)."""
    path = redis_password_file(settings)
    if create:
        settings.home_dir()  # created if need be
        return read_or_create(path, lambda: secrets.token_hex(32))
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def flower_auth_file(settings: Settings) -> Path:
    return settings.flower_auth_file.expanduser() if settings.flower_auth_file else (
        settings.home.expanduser() / FLOWER_AUTH_FILE)


def flower_basic_auth(settings: Settings, *, create: bool = False) -> str:
    """Flower's logins as its `basic_auth` option takes them (`user:password`, comma-separated): from
    FEDGATE_FLOWER_BASIC_AUTH, else from the credentials file, one `user:password` a line. With `create`, and
    neither configured, a login `operator:<generated password>` is written to $FEDGATE_HOME/flower-auth."""
    if settings.flower_basic_auth:
        return settings.flower_basic_auth
    path = flower_auth_file(settings)
    if settings.flower_auth_file and not path.is_file():
        raise ConfigError(f"FEDGATE_FLOWER_AUTH_FILE: {path} does not exist; write `user:password` lines into it, "
                          "or unset it to have a login generated in $FEDGATE_HOME")
    if create:
        settings.home_dir()  # created if need be
        text = read_or_create(path, lambda: f"{FLOWER_USER}:{secrets.token_urlsafe(24)}")
    else:
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            raise ConfigError(f"no Flower login in {path}: start Flower with `fedgate flower` (or `fedgate up`), "
                              "which generates one") from None
    logins = [line.strip() for line in text.splitlines() if line.strip()]
    bad = [n for n, login in enumerate(logins, start=1) if ":" not in login or "," in login]
    if not logins or bad:
        raise ConfigError(f"{path}: line {bad[0] if bad else 1} is not `user:password` (one login a line, no commas)")
    return ",".join(logins)


def credential_secrets(settings: Settings) -> list[str]:
    """The passwords above and the one in FEDGATE_REDIS_URL, for the log filter to mask (never to log)."""
    found = [embedded_redis_password(settings) or ""]
    for part in (settings.redis_url or "").split(";"):
        try:
            found.append(urlsplit(part.strip()).password or "")
        except ValueError:
            continue
    if settings.redis_sentinel_password:
        found.append(settings.redis_sentinel_password)
    logins = settings.flower_basic_auth or ""
    if not logins:
        try:
            logins = flower_auth_file(settings).read_text()
        except OSError:
            logins = ""
    found += [login.partition(":")[2] for login in logins.replace(",", "\n").splitlines()]
    return [secret.strip() for secret in found if secret.strip()]
