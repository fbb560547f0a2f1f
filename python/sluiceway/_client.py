"""The synchronous Producer and Consumer over the native client core.

Every wait (send when the buffer is full, ``result``, ``flush``, ``poll``, commits) runs in the
core with the GIL released; Ctrl-C interrupts it. No retries, batching or defaults here: the
core owns them (``docs/ARCHITECTURE.md``, "API boundaries").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Callable, Optional, Union

from . import _native
from ._config import ConfigValue, config_map
from ._native import Record
from ._types import RecordMetadata, TopicPartition, TopicPartitionOffset
from .errors import ClosedError, SluicewayError

Value = Union[bytes, str, None]
#: Kafka record headers: ``[(key, value), ...]`` (order kept, keys may repeat) or a dict.
Headers = Union[Sequence[tuple[str, Value]], Mapping[str, Value]]
Partitions = Iterable[Union[TopicPartition, "tuple[str, int]"]]
RebalanceCallback = Callable[[list[TopicPartitionOffset]], None]


def _tps(partitions: Partitions | None) -> list[tuple[str, int]] | None:
    if partitions is None:
        return None
    if isinstance(partitions, (str, bytes)):
        raise TypeError("partitions must be an iterable of (topic, partition) pairs")
    return [(t, p) for t, p in partitions]


class DeliveryHandle:
    """The delivery report of one :meth:`Producer.send`."""

    __slots__ = ("_native",)

    def __init__(self, native: _native.Delivery) -> None:
        self._native = native

    def result(self, timeout: float | None = None) -> RecordMetadata:
        """Waits up to ``timeout`` seconds; the record's metadata, or raises its error."""
        return self._native.result(timeout)

    def done(self) -> bool:
        return self._native.done()


class BatchHandle:
    """The delivery reports of one :meth:`Producer.send_batch`, one per record in order."""

    __slots__ = ("_native",)

    def __init__(self, native: _native.BatchDelivery) -> None:
        self._native = native

    def results(self, timeout: float | None = None) -> list[RecordMetadata | SluicewayError]:
        """Waits up to ``timeout`` seconds for every record: metadata or the record's error."""
        return self._native.results(timeout)

    def wait(self, timeout: float | None = None) -> None:
        """Waits up to ``timeout`` seconds for every record; returns when all were delivered,
        else raises the first failed record's error (:meth:`results` tells each record's).
        Cheaper than :meth:`results` when only success matters: no per-record result."""
        self._native.wait(timeout)

    def done(self) -> bool:
        return self._native.done()

    def __len__(self) -> int:
        return len(self._native)


class Producer:
    """Sends records. ``Producer(bootstrap_servers="127.0.0.1:9292", linger_ms=5)`` or
    ``Producer({"bootstrap.servers": "127.0.0.1:9292"})``; Kafka's producer config names."""

    def __init__(self, config: Mapping[str, ConfigValue] | None = None, **kwargs: ConfigValue) -> None:
        self._native = _native.Producer(config_map(config, kwargs))

    def send(
        self,
        topic: str,
        value: Value,
        key: Value = None,
        partition: int | None = None,
        timestamp: int | None = None,
        headers: Headers | None = None,
    ) -> DeliveryHandle:
        """Queues one record (``str`` is encoded UTF-8); ``.result(timeout)`` waits for it.

        ``headers``: Kafka record headers as ``[(key, value), ...]`` (order kept, keys may
        repeat) or a dict; values ``bytes``, ``str`` or ``None``.
        """
        return DeliveryHandle(self._native.send(topic, value, key, partition, timestamp, headers))

    def send_batch(self, topic: str, values: Iterable[Value], keys: Iterable[Value] | None = None) -> BatchHandle:
        """Queues many records in one call into the core (keys, if given, pair with values)."""
        return BatchHandle(self._native.send_batch(topic, values, keys))

    def flush(self, timeout: float | None = None) -> None:
        """Waits until every queued record is resolved; raises if any failed or timed out."""
        self._native.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flushes, then fails what is left with ``ClosedError``; idempotent."""
        self._native.close(timeout)

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class Consumer:
    """Reads records of assigned partitions or of a group subscription."""

    def __init__(self, config: Mapping[str, ConfigValue] | None = None, **kwargs: ConfigValue) -> None:
        self._native = _native.Consumer(config_map(config, kwargs))
        self._on_assign: RebalanceCallback | None = None
        self._on_revoke: RebalanceCallback | None = None

    def subscribe(
        self,
        topics: Iterable[str],
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
    ) -> None:
        """Joins the group ``group.id``. ``on_revoke``/``on_assign`` run inside :meth:`poll` on
        the caller's thread; committing in ``on_revoke`` hands partitions over exactly."""
        if isinstance(topics, str):
            raise TypeError("topics must be a list of topic names, not a str")
        self._on_assign, self._on_revoke = on_assign, on_revoke
        self._native.subscribe(list(topics))

    def unsubscribe(self) -> None:
        self._native.unsubscribe()

    def subscription(self) -> list[str]:
        return self._native.subscription()

    def assign(self, partitions: Partitions) -> None:
        self._native.assign(_tps(partitions) or [])

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self._native.assignment()]

    def _dispatch(self, events: list[tuple[str, list[tuple[str, int, Optional[int]]]]]) -> None:
        for kind, positions in events:
            callback = self._on_revoke if kind == "revoked" else self._on_assign
            if callback is not None:
                callback([TopicPartitionOffset._make(p) for p in positions])

    def poll(self, timeout: float = 1.0, max_records: int | None = None) -> list[Record]:
        """Records waiting up to ``timeout`` seconds (empty when none came). With rebalance
        callbacks, a call that brings rebalance events runs them and returns no records."""
        if self._on_assign is None and self._on_revoke is None and max_records is None:
            return self._native.poll(timeout)
        records, events = self._native.poll_batch(timeout, max_records)
        self._dispatch(events)
        return records

    def __iter__(self) -> Iterator[Record]:
        """Records forever, until the consumer is closed."""
        try:
            while True:
                yield from self.poll(1.0)
        except ClosedError:
            return

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self._native.seek(topic, partition, offset)

    def seek_to_beginning(self, partitions: Partitions | None = None) -> None:
        self._native.seek_to_beginning(_tps(partitions))

    def seek_to_end(self, partitions: Partitions | None = None) -> None:
        self._native.seek_to_end(_tps(partitions))

    def seek_to_timestamp(self, timestamp_ms: int, partitions: Partitions | None = None) -> None:
        """Moves to the first record with a timestamp ≥ ``timestamp_ms`` (ms since the epoch)."""
        self._native.seek_to_timestamp(timestamp_ms, _tps(partitions))

    def position(self, topic: str, partition: int) -> int:
        return self._native.position(topic, partition)

    def committed(self, topic: str, partition: int) -> int | None:
        """The offset committed in the local offset store (``offset_store=``), if any."""
        return self._native.committed(topic, partition)

    def commit(self, offsets: Iterable[TopicPartitionOffset | tuple[str, int, int]] | None = None) -> None:
        """Commits the current positions, or the given ``(topic, partition, offset)``s."""
        self._native.commit(None if offsets is None else [(t, p, o) for t, p, o in offsets])  # type: ignore[misc]

    def pause(self, partitions: Partitions) -> None:
        self._native.pause(_tps(partitions) or [])

    def resume(self, partitions: Partitions) -> None:
        self._native.resume(_tps(partitions) or [])

    def paused(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self._native.paused()]

    def membership(self) -> tuple[str, int] | None:
        """``(member id, generation)`` once joined to a group."""
        return self._native.membership()

    def close(self, timeout: float | None = None) -> None:
        """Commits (with auto-commit), leaves the group, releases the offset store."""
        self._native.close(timeout)

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
