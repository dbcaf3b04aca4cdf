"""kombu's Redis transport, reusing one synchronous client per channel.

Stock kombu builds a new redis.Redis object for every ack, publish and unacked-bookkeeping call; with redis-py 8
each costs ~0.1 ms of CPU under the GIL the worker's I/O loop also needs. The client is thread-safe and its
connection pool is the channel's own, so one per channel (rebuilt if the pool is replaced) behaves the same.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    _shared_client: Any = None
    _shared_client_pool: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        if self._shared_client is None or self._shared_client_pool is not pool:
            self._shared_client = super()._create_client(asynchronous=False)
            self._shared_client_pool = pool
        return self._shared_client


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel
