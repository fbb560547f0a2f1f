"""asyncio clients: awaitables backed by the client core's own runtime (no thread per call).

Constructing a client bootstraps metadata with a short blocking call (GIL released); every
other wait is an asyncio future the core completes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from types import TracebackType

from ._client import Consumer, Producer, Value
from ._native import Record
from ._types import RecordMetadata
from .errors import ClosedError, SluicewayError


class AsyncProducer(Producer):
    """:class:`sluiceway.Producer` with ``await``able sends."""

    async def send(  # type: ignore[override]
        self,
        topic: str,
        value: Value,
        key: Value = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> RecordMetadata:
        """Sends one record and returns once it is delivered (raises its error)."""
        return RecordMetadata._make(await self._native.send_async(topic, value, key, partition, timestamp))

    async def send_batch(  # type: ignore[override]
        self, topic: str, values: Iterable[Value], keys: Iterable[Value] | None = None
    ) -> list[RecordMetadata | SluicewayError]:
        """Sends many records in one call; one metadata or error per record once all resolved."""
        results = await self._native.send_batch_async(topic, values, keys)
        return [r if isinstance(r, SluicewayError) else RecordMetadata._make(r) for r in results]  # type: ignore[arg-type]

    async def flush(self, timeout: float | None = None) -> None:  # type: ignore[override]
        await self._native.flush_async(timeout)

    async def close(self, timeout: float | None = None) -> None:  # type: ignore[override]
        await self._native.close_async(timeout)

    async def __aenter__(self) -> AsyncProducer:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class AsyncConsumer(Consumer):
    """:class:`sluiceway.Consumer` with ``await``able poll, commit and close."""

    async def poll(self, timeout: float = 1.0, max_records: int | None = None) -> list[Record]:  # type: ignore[override]
        records, events = await self._native.poll_batch_async(timeout, max_records)
        self._dispatch(events)
        return records

    async def commit(self) -> None:  # type: ignore[override]
        await self._native.commit_async()

    async def close(self, timeout: float | None = None) -> None:  # type: ignore[override]
        await self._native.close_async(timeout)

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
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
