"""Small value types shared by the sync and asyncio clients."""

from __future__ import annotations

from typing import NamedTuple, Optional

from . import _native


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


# The native module builds delivery results as RecordMetadata directly (one C call per record).
_native.register_metadata_class(RecordMetadata)
