"""The Celery app Flower runs against (`fedgate flower`): the workers' app on kombu's stock Redis transport.

Workers use `workers.broker:Transport` (kombu's Redis transport with one shared client per channel). Flower only
reads events and asks workers over the broadcast channel, so the stock transport serves it just as well, and
Flower needs it: its Broker page (queue lengths per partner queue and lane) picks a broker client from
the connection URL's scheme, which a custom transport turns into `workers.broker:Transport://...` ("'redis' broker
is not supported"). The messages and settings are otherwise the workers' own.
"""

from __future__ import annotations

from celery import Celery

from gateway_core.settings import get_settings
from workers.celery_app import make_celery


def make_flower_celery() -> Celery:
    app = make_celery(get_settings())
    app.conf.broker_transport = None  # the URL's scheme (redis, rediss, sentinel) picks kombu's own transport
    return app


app = make_flower_celery()
