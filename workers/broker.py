"""kombu's Redis transport with fewer round trips per message, same guarantees.

Stock kombu, per message: builds a new redis.Redis object for every ack, publish and unacked-bookkeeping call
(with redis-py 8 each costs ~0.1 ms of CPU); takes one message per BRPOP; writes its unacked record in its own
MULTI; acks in its own MULTI. In a worker holding a thousand calls in flight all of that runs under the one GIL
the I/O loop also needs. Here:

- one synchronous client per channel (thread-safe, on the channel's own pool);
- after a BRPOP, up to the free prefetch allowance more messages are taken from the same list AND recorded as
  unacked in one Lua step, so no message is ever out of both the queue and the unacked record. That extra fetch
  runs only once the message BRPOP answered with has its own unacked record (kombu writes it as it delivers the
  message): a fetch that fails, or a worker that dies during it, cannot take that message with it;
- acks are collected and removed from the unacked record together every ACK_FLUSH_INTERVAL_S by the consumer's
  event loop. An ack lost to a crash in that window only means the message is redelivered after the visibility
  timeout, which the job store's run tokens already make harmless;
- batch-lane queues (`partner.<name>.batch`) come last in every BRPOP, so a worker reading both lanes takes a
  batch job only when no interactive one is waiting (round robin is kept within each lane);
- `captured_publishes()`: a producer can have its publishes recorded as Redis commands instead of sent, and run
  them itself in the same MULTI as the job they belong to (workers.enqueue, for gateway_core.jobs.submission:
  one atomic round trip per submit).

`SentinelTransport` is the same for sentinel:// URLs, on kombu's Sentinel-managed pools (transport option
`master_name`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from gateway_core.fleet import keys
from gateway_core.fleet.lua import script
from gateway_core.fleet.redis_clients import ExplainedSentinelConnection

log = logging.getLogger("fedgate.broker")

ACK_FLUSH_INTERVAL_S = 0.02
MAX_EXTRA_PER_FETCH = 16  # messages taken after a BRPOP, by gateway_core/fleet/lua/broker_take_more.lua

_capture = threading.local()


@contextlib.contextmanager
def captured_publishes() -> Iterator[list[tuple[Any, ...]]]:
    """Inside the block, publishes made on this thread through `producer.batch()` are not sent: each final Redis
    command (`("lpush", key, message)`, ...) is appended to the list yielded, for the caller to run."""
    commands: list[tuple[Any, ...]] = []
    outer = getattr(_capture, "commands", None)
    _capture.commands = commands
    try:
        yield commands
    finally:
        _capture.commands = outer


class _RecordedPublishes:
    """kombu's publish-batch interface (kombu.transport.redis.PublishBatch) recording instead of sending."""

    def __init__(self, channel: Any, commands: list[tuple[Any, ...]]) -> None:
        self.channel = channel
        self.commands = commands

    def publish(self, message: Any, **kwargs: Any) -> Any:
        return self.channel.basic_publish(message, _publish_batch=self, **kwargs)

    def add(self, name: str, *args: Any) -> None:
        self.commands.append((name, *args))

    def flush(self) -> None:
        """Nothing to send: the commands are the caller's."""

    def discard(self) -> None:
        self.commands.clear()

    def close(self) -> None:
        """Holds no connection."""


def _is_batch_lane(queue: str) -> bool:
    return keys.lane_of_queue(queue) == keys.BATCH


class QoS(kombu_redis.QoS):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ack_lock = threading.Lock()
        self._pending_acks: list[str] = []
        self._already_recorded: set[str] = set()

    def append(self, message: Any, delivery_tag: str) -> None:
        if delivery_tag in self._already_recorded:
            self._already_recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
            return
        super().append(message, delivery_tag)

    def mark_recorded(self, delivery_tags: list[str]) -> None:
        self._already_recorded.update(delivery_tags)

    @property
    def batch_acks(self) -> bool:
        """Only where a consumer event loop flushes them (a worker); elsewhere acks are written at once."""
        return bool(getattr(self.channel.connection, "acks_batched", False))

    def ack(self, delivery_tag: str) -> None:
        if not self.batch_acks:
            super().ack(delivery_tag)
            return
        with self._ack_lock:
            self._pending_acks.append(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def flush_acks(self) -> None:
        with self._ack_lock:
            tags, self._pending_acks = self._pending_acks, []
        if not tags:
            return
        try:
            with self.channel.conn_or_acquire() as client:
                client.pipeline().zrem(self.unacked_index_key, *tags).hdel(self.unacked_key, *tags).execute()
        except RedisError as exc:
            log.warning("could not write %d acks (%s); retrying", len(tags), exc.__class__.__name__)
            with self._ack_lock:
                self._pending_acks[:0] = tags

    def restore_unacked_once(self, stderr: Any = None) -> Any:
        self.flush_acks()
        return super().restore_unacked_once(stderr)


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    QoS = QoS
    _shared_client: Any = None
    _shared_client_pool: Any = None
    _take_more_script: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        if self._shared_client is None or self._shared_client_pool is not pool:
            self._shared_client = super()._create_client(asynchronous=False)
            self._shared_client_pool = pool
        return self._shared_client

    def create_publish_batch(self, max_size: int) -> Any:
        commands = getattr(_capture, "commands", None)
        if commands is not None:
            return _RecordedPublishes(self, commands)
        return super().create_publish_batch(max_size)

    def _get_pool(self, asynchronous: bool = False) -> Any:
        # After a lost connection Celery collects the kombu Connection (which lets go of the transport's client)
        # and then closes it, closing this channel: writing its pending acks and unacked restores needs a pool, and
        # kombu would build one from the gone client (AttributeError, which kills the worker). Fail as the broker
        # being unreachable instead: the close path ignores that, and the visibility timeout brings the messages back.
        if self.connection is None or self.connection.client is None:
            raise RedisConnectionError("the broker connection is closed")
        return super()._get_pool(asynchronous)

    def _brpop_start(self, timeout: float | None = None) -> None:
        if timeout is None:
            timeout = self.brpop_timeout
        queues = sorted(self._queue_cycle.consume(len(self.active_queues)), key=_is_batch_lane)
        if not queues:
            return
        lists = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()  # type: ignore[assignment]  # kombu declares it None
        command_args = ["BRPOP", *lists, timeout or 0]
        if self.global_keyprefix:
            command_args = self.client._prefix_args(command_args)
        self.client.connection.send_command(*command_args)

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise kombu_redis.Empty()
            key, item = bytes_to_str(dest__item[0]), dest__item[1]
            queue = key.rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
            # First the message BRPOP took: delivering it writes its unacked record (QoS.append) before the task
            # sees it. Only then more from the same list, each recorded in the step that takes it.
            self.connection._deliver(loads(bytes_to_str(item)), queue)
            try:
                extra = self._take_more(key)
            except RedisError as exc:  # taken and recorded in one step, or not at all: nothing is lost
                log.warning("could not fetch more messages from %s (%s)", queue, exc.__class__.__name__)
                return True
            for payload in extra:
                self.connection._deliver(payload, queue)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]  # kombu declares it bool, sets None
            self._flush_brpop_reauth()

    def _take_more(self, key: str) -> list[dict[str, Any]]:
        """More messages from the list BRPOP just answered from, within the prefetch allowance left once the message
        BRPOP took has been delivered (it counts against the allowance from then on)."""
        if self.global_keyprefix or not self.qos.prefetch_count:
            return []
        allowance = min(self.qos.can_consume_max_estimate(), MAX_EXTRA_PER_FETCH)
        if allowance <= 0:
            return []
        client = self._create_client()
        if self._take_more_script is None or self._take_more_script.registered_client is not client:
            self._take_more_script = client.register_script(script("broker_take_more"))
        qos = self.qos
        items = self._take_more_script(keys=[key, qos.unacked_index_key, qos.unacked_key],
                                       args=[allowance, time.time()])
        payloads = [loads(bytes_to_str(item)) for item in items]
        qos.mark_recorded([payload["properties"]["delivery_tag"] for payload in payloads])
        return payloads


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        super().register_with_event_loop(connection, loop)
        self.acks_batched = True
        previous = getattr(self, "_ack_flush_timer", None)
        if previous is not None:
            previous.cancel()
        self._ack_flush_timer = loop.call_repeatedly(ACK_FLUSH_INTERVAL_S, self._flush_acks)

    def _flush_acks(self) -> None:
        channels: list[Any] = list(self.channels or ())
        for channel in channels:
            if channel._qos is not None:
                channel._qos.flush_acks()


class SentinelChannel(Channel, kombu_redis.SentinelChannel):  # type: ignore[misc]
    """Our Channel on kombu's SentinelChannel pools: each new connection asks the sentinels for the master."""

    connection_class = ExplainedSentinelConnection


class SentinelTransport(Transport):
    Channel = SentinelChannel
    default_port = kombu_redis.SentinelTransport.default_port  # type: ignore[assignment]  # kombu declares None
