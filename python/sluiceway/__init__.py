"""Sluiceway's Python client: a thin, typed layer over the native Rust client core.

>>> from sluiceway import Producer
>>> with Producer(bootstrap_servers="127.0.0.1:9292") as p:
...     p.send("events", b"hello").result(10)
"""

from __future__ import annotations

from . import errors
from ._client import BatchHandle, Consumer, DeliveryHandle, Producer
from ._native import Record
from ._types import RecordMetadata, TopicPartition, TopicPartitionOffset
from .admin import Admin
from .errors import *  # noqa: F403  (one class per error code)
from .errors import SluicewayError

__all__ = [
    "Admin",
    "BatchHandle",
    "Consumer",
    "DeliveryHandle",
    "Producer",
    "Record",
    "RecordMetadata",
    "SluicewayError",
    "TopicPartition",
    "TopicPartitionOffset",
    "errors",
]
