"""Small value types shared by the sync and asyncio clients."""

from __future__ import annotations

from typing import NamedTuple, Optional


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class TopicPartitionOffset(NamedTuple):
    """A partition and a position in it (``None``: none yet)."""

    topic: str
    partition: int
    offset: Optional[int]


class RecordMetadata(NamedTuple):
    """Where a sent record landed (``offset`` is ``None`` with ``acks=0``)."""

    topic: str
    partition: int
    offset: Optional[int]
    timestamp: int
