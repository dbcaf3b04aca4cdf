"""The configured URL to Redis clients and broker transports: plain servers and kombu's Sentinel URL form."""

from __future__ import annotations

import pytest

from gateway_core.errors import ConfigError
from gateway_core.fleet.redis_clients import kombu_transport_options, redacted, sentinel_target
from gateway_core.settings import Settings
from workers.celery_app import make_celery


def settings(url: str, **changes: str) -> Settings:
    return Settings(redis_url=url, **changes)  # type: ignore[arg-type]


def test_sentinel_url_names_the_sentinels_the_masters_credentials_and_db() -> None:
    target = sentinel_target(settings("sentinel://:p%40ss@s1:26380/2;sentinel://:p%40ss@s2",
                                      redis_sentinel_password="sentinel-pw"))
    assert target.sentinels == (("s1", 26380), ("s2", 26379))
    assert target.master == "mymaster"
    assert target.master_kwargs() == {"db": 2, "username": None, "password": "p@ss"}
    assert target.sentinel_kwargs()["password"] == "sentinel-pw"


def test_master_name_and_a_user_come_from_settings_and_the_first_url() -> None:
    target = sentinel_target(settings("sentinel://app:pw@s1:26379;sentinel://s2:26379", redis_sentinel_master="jobs"))
    assert target.master == "jobs"
    assert (target.username, target.password, target.db) == ("app", "pw", 0)
    assert "password" not in target.sentinel_kwargs()  # the URL's password is the master's, not the sentinels'


@pytest.mark.parametrize(("url", "says"), [
    ("sentinel://s1:26379;redis://s2:6379", "is not a sentinel URL"),
    ("sentinel://:a@s1;sentinel://:b@s2", "different passwords"),
    ("sentinel://s1:26379?ssl_cert_reqs=none", r"take no \?options"),
    ("sentinel://s1:26379/zero", "database number"),
    ("sentinel://s1:port", "bad port"),
])
def test_bad_sentinel_urls_say_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        sentinel_target(settings(url))
    assert ":a@" not in str(caught.value) and ":b@" not in str(caught.value)


def test_redacted_drops_every_password() -> None:
    assert redacted("sentinel://:x@s1:1;sentinel://u:y@s2:2") == "sentinel://s1:1;sentinel://s2:2"
    assert redacted("redis://:x@h:6379/0") == "redis://h:6379/0"


def test_the_url_picks_the_workers_transport_and_its_options() -> None:
    plain = make_celery(settings("redis://127.0.0.1:6379/0")).conf
    assert plain.broker_transport == "workers.broker:Transport"
    assert "master_name" not in plain.broker_transport_options
    assert kombu_transport_options(settings("redis://127.0.0.1:6379/0")) == {}
    sentinel = make_celery(settings("sentinel://s1:26379", redis_sentinel_master="jobs")).conf
    assert sentinel.broker_transport == "workers.broker:SentinelTransport"
    assert sentinel.broker_transport_options["master_name"] == "jobs"
    assert sentinel.broker_transport_options["visibility_timeout"] == 300  # the usual options stay
