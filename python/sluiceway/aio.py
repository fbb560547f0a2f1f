"""asyncio clients: awaitables backed by the client core's own runtime (no thread per call).

As with aiokafka, constructing a client does no I/O — it only checks the configuration (a bad
key raises at once) — and ``await client.start()`` or ``async with client`` connects: the core
bootstraps metadata (and opens the offset store) on its runtime while the event loop keeps
running. An awaited call on a client not started yet starts it first; a synchronous method
(``assign``, ``seek``, …) on one raises ``RuntimeError``. Every other wait is an asyncio future
the core completes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Optional

from . import _native as native
from ._client import Consumer, Headers, Producer, Value
from ._config import ConfigValue, config_map
from ._native import Record
from ._types import RecordMetadata
from .errors import ClosedError, SluicewayError


def _not_started(kind: str) -> RuntimeError:
    return RuntimeError(f"the {kind} is not started: `await {kind.lower()}.start()` or use `async with {kind}(...)` first")


class AsyncProducer(Producer):
    """:class:`sluiceway.Producer` with ``await``able sends; ``await start()`` or ``async with``."""

    def __init__(self, config: Mapping[str, ConfigValue] | None = None, **kwargs: ConfigValue) -> None:
        self._config = native.ProducerConfig(config_map(config, kwargs))
        self._connecting: Optional[asyncio.Future[native.Producer]] = None
        self._started: Optional[native.Producer] = None

    @property
    def _native(self) -> native.Producer:
        if self._started is None:
            raise _not_started("AsyncProducer")
        return self._started

    @_native.setter
    def _native(self, value: native.Producer) -> None:
        self._started = value

    async def start(self) -> None:
        """Connects (bootstraps metadata on the core's runtime); idempotent, safe to race."""
        await _start(self)

    async def send(  # type: ignore[override]
        self,
        topic: str,
        value: Value,
        key: Value = None,
        partition: int | None = None,
        timestamp: int | None = None,
        headers: Headers | None = None,
    ) -> RecordMetadata:
        """Sends one record and returns once it is delivered (raises its error)."""
        await _start(self)
        return await self._native.send_async(topic, value, key, partition, timestamp, headers)

    async def send_batch(  # type: ignore[override]
        self, topic: str, values: Iterable[Value], keys: Iterable[Value] | None = None
    ) -> list[RecordMetadata | SluicewayError]:
        """Sends many records in one call; one metadata or error per record once all resolved."""
        await _start(self)
        return await self._native.send_batch_async(topic, values, keys)

    async def flush(self, timeout: float | None = None) -> None:  # type: ignore[override]
        if self._started is not None:
            await self._started.flush_async(timeout)

    async def close(self, timeout: float | None = None) -> None:  # type: ignore[override]
        """Flushes and closes; a producer never started has nothing to close."""
        if self._started is not None:
            await self._started.close_async(timeout)

    async def __aenter__(self) -> AsyncProducer:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class AsyncConsumer(Consumer):
    """:class:`sluiceway.Consumer` with ``await``able poll, commit and close; ``await start()``
    or ``async with`` before the synchronous methods (``assign``, ``subscribe``, ``seek``…)."""

    def __init__(self, config: Mapping[str, ConfigValue] | None = None, **kwargs: ConfigValue) -> None:
        self._config = native.ConsumerConfig(config_map(config, kwargs))
        self._connecting: Optional[asyncio.Future[native.Consumer]] = None
        self._started: Optional[native.Consumer] = None
        self._on_assign = None
        self._on_revoke = None

    @property
    def _native(self) -> native.Consumer:
        if self._started is None:
            raise _not_started("AsyncConsumer")
        return self._started

    @_native.setter
    def _native(self, value: native.Consumer) -> None:
        self._started = value

    async def start(self) -> None:
        """Connects (offset store, metadata) on the core's runtime; idempotent, safe to race."""
        await _start(self)

    async def poll(self, timeout: float = 1.0, max_records: int | None = None) -> list[Record]:  # type: ignore[override]
        """Records waiting up to ``timeout`` seconds. A call that brings rebalance events runs
        ``on_revoke``/``on_assign`` and returns no records (see :meth:`Consumer.poll`)."""
        await _start(self)
        records, events = await self._native.poll_batch_async(timeout, max_records)
        self._dispatch(events)
        return records

    async def commit(self) -> None:  # type: ignore[override]
        await _start(self)
        await self._native.commit_async()

    async def close(self, timeout: float | None = None) -> None:  # type: ignore[override]
        """Commits (with auto-commit), leaves the group; a consumer never started has nothing
        to close."""
        if self._started is not None:
            await self._started.close_async(timeout)

    def __aiter__(self) -> AsyncIterator[Record]:
        return self._records()

    async def _records(self) -> AsyncIterator[Record]:
        try:
            while True:
                for record in await self.poll(1.0):
                    yield record
        except ClosedError:
            return

    async def __aenter__(self) -> AsyncConsumer:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


async def _start(client: AsyncProducer | AsyncConsumer) -> None:
    """Awaits the one connect future of `client` (created by the first caller, shared by racing
    ones); a failed or cancelled connect is forgotten so a later call tries again."""
    if client._started is not None:
        return
    if client._connecting is None:
        if isinstance(client, AsyncProducer):
            client._connecting = native.Producer.connect(client._config)
        else:
            client._connecting = native.Consumer.connect(client._config)
    connecting = client._connecting
    try:
        started = await connecting
    except BaseException:
        if client._connecting is connecting:
            client._connecting = None
        raise
    if client._started is None:
        client._started = started
