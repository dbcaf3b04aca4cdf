"""Generated credentials under FEDGATE_HOME (gateway_core.fleet.credentials): the embedded Redis's password and
Flower's login, in 0600 files; the clients' URL carries the password; the log filter masks them."""

from __future__ import annotations

import io
import logging
import stat
from pathlib import Path

import pytest

from gateway_core.errors import ConfigError
from gateway_core.fleet.credentials import (
    embedded_redis_password,
    flower_auth_file,
    flower_basic_auth,
    read_or_create,
    redis_password_file,
)
from gateway_core.fleet.logs import configure_logging
from gateway_core.fleet.redis_clients import redis_url
from gateway_core.settings import Settings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_secret_is_created_once_owner_only_and_then_read_back(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    made: list[str] = []

    def make() -> str:
        made.append(f"secret-{len(made)}")
        return made[-1]

    assert read_or_create(path, make) == "secret-0"
    assert read_or_create(path, make) == "secret-0" and made == ["secret-0"]
    assert mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]  # no temporary file left behind


def test_a_secret_file_others_can_read_is_made_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("kept\n")
    path.chmod(0o644)
    assert read_or_create(path, lambda: "new") == "kept"
    assert mode(path) == 0o600


def test_an_empty_secret_file_is_an_error_that_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("\n")
    with pytest.raises(ConfigError, match="is empty: delete it"):
        read_or_create(tmp_path / "secret", lambda: "new")


def test_the_embedded_redis_url_carries_the_generated_password(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, embedded_redis_port=6391)
    assert embedded_redis_password(settings) is None
    assert redis_url(settings) == "redis://127.0.0.1:6391/0"  # nothing generated yet: no password
    password = embedded_redis_password(settings, create=True)
    assert password is not None and len(password) == 64 and int(password, 16) >= 0
    assert mode(redis_password_file(settings)) == 0o600
    assert redis_url(settings) == f"redis://:{password}@127.0.0.1:6391/0"
    assert embedded_redis_password(settings, create=True) == password
    # a configured Redis is used as it is
    assert redis_url(Settings(home=tmp_path, redis_url="redis://:other@db:6379/2")) == "redis://:other@db:6379/2"


def test_flower_gets_a_generated_login_when_none_is_configured(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    with pytest.raises(ConfigError, match="no Flower login"):
        flower_basic_auth(settings)
    login = flower_basic_auth(settings, create=True)
    user, _, password = login.partition(":")
    assert user == "operator" and len(password) >= 24
    assert flower_auth_file(settings) == tmp_path / "flower-auth" and mode(tmp_path / "flower-auth") == 0o600
    assert flower_basic_auth(settings) == login


def test_flower_logins_come_from_the_setting_then_the_file(tmp_path: Path) -> None:
    logins = tmp_path / "logins"
    logins.write_text("alice:one\n\nbob:two\n")
    assert flower_basic_auth(Settings(home=tmp_path, flower_auth_file=logins)) == "alice:one,bob:two"
    inline = Settings(home=tmp_path, flower_auth_file=logins, flower_basic_auth="carol:three")
    assert flower_basic_auth(inline, create=True) == "carol:three"
    assert not (tmp_path / "flower-auth").exists()  # nothing generated when a login is configured


@pytest.mark.parametrize("content", ["no-colon-here\n", "alice:one,two\n"])
def test_a_bad_login_file_names_the_line(tmp_path: Path, content: str) -> None:
    logins = tmp_path / "logins"
    logins.write_text(content)
    with pytest.raises(ConfigError, match=r"line 1 is not `user:password`"):
        flower_basic_auth(Settings(home=tmp_path, flower_auth_file=logins))


def test_a_login_file_that_is_not_there_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"FEDGATE_FLOWER_AUTH_FILE: .* does not exist"):
        flower_basic_auth(Settings(home=tmp_path, flower_auth_file=tmp_path / "missing"), create=True)


def test_the_log_filter_masks_redis_passwords_and_flower_logins(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, redis_url="redis://:url-password-123@db:6379/0", log_format="text")
    generated = embedded_redis_password(settings, create=True)
    login = flower_basic_auth(settings, create=True)
    stream = io.StringIO()
    handler = configure_logging("test", settings, stream=stream)
    try:
        logging.getLogger("fedgate.test").warning("connecting with %s, %s and %s", "url-password-123", generated,
                                                  login.partition(":")[2])
    finally:
        logging.getLogger().removeHandler(handler)
    line = stream.getvalue()
    assert "connecting with ***, *** and ***" in line, line
    assert "url-password-123" not in line and str(generated) not in line
