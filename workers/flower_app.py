"""The Celery app Flower runs against (`fedgate flower`): the workers' app on kombu's stock Redis transport.

Workers use `workers.broker:Transport` (kombu's Redis transport with one shared client per channel). Flower only
reads events and asks workers over the broadcast channel, so the stock transport serves it just as well, and
Flower needs it: its Broker page (queue lengths per partner queue and lane) picks a broker client from
the connection URL's scheme, which a custom transport turns into `workers.broker:Transport://...` ("'redis' broker
is not supported"). The messages and settings are otherwise the workers' own.

`celery -A workers.flower_app flower` finds the app through this module's `app` attribute, built on first access
(importing the module builds nothing).
"""

from __future__ import annotations

import functools
import os

from celery import Celery

from gateway_core.settings import Settings, get_settings
from workers.celery_app import make_celery


def use_basic_auth(settings: Settings) -> None:
    """Flower's logins, read here in the Flower process (FEDGATE_FLOWER_BASIC_AUTH or the login file, see
    gateway_core.fleet.credentials) and handed to Flower through its own FLOWER_BASIC_AUTH option, which it reads
    from this process's environment after loading the app: never through a command line anyone can read."""
    from gateway_core.fleet.credentials import flower_basic_auth

    os.environ["FLOWER_BASIC_AUTH"] = flower_basic_auth(settings)


def make_flower_celery() -> Celery:
    app = make_celery(get_settings())
    app.conf.broker_transport = None  # the URL's scheme (redis, rediss, sentinel) picks kombu's own transport
    return app


@functools.cache
def get_flower_app() -> Celery:
    """The app `celery -A workers.flower_app` finds: Flower's, so its login is set up first (no login: no app)."""
    use_basic_auth(get_settings())
    return make_flower_celery()


def __getattr__(name: str) -> Celery:
    if name == "app":
        return get_flower_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
