"""Admin: topics, offsets and groups."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import NamedTuple, Optional, Union

from . import _native
from ._config import ConfigValue, config_map
from ._types import TopicPartition
from .errors import SluicewayError


class TopicListing(NamedTuple):
    name: str
    partitions: int
    replication_factor: int


class PartitionInfo(NamedTuple):
    partition: int
    leader: Optional[int]
    replicas: list[int]
    isr: list[int]


class TopicDescription(NamedTuple):
    name: str
    partitions: list[PartitionInfo]
    configs: dict[str, str]


class GroupListing(NamedTuple):
    group_id: str
    state: str
    members: int
    generation: int


class MemberDescription(NamedTuple):
    member_id: str
    client_id: str
    assignment: list[TopicPartition]


class GroupDescription(NamedTuple):
    group_id: str
    state: str
    generation: int
    members: list[MemberDescription]
    offsets: dict[TopicPartition, Optional[int]]


class ListedOffset(NamedTuple):
    offset: Optional[int]
    log_start_offset: int
    high_watermark: int


OffsetSpec = Union[str, int]


class Admin:
    def __init__(self, config: Mapping[str, ConfigValue] | None = None, **kwargs: ConfigValue) -> None:
        self._native = _native.Admin(config_map(config, kwargs))

    def create_topic(
        self, name: str, partitions: int, replication_factor: int = 1, configs: Mapping[str, str] | None = None
    ) -> None:
        self._native.create_topic(name, partitions, replication_factor, dict(configs) if configs else None)

    def delete_topic(self, name: str) -> None:
        self._native.delete_topic(name)

    def list_topics(self) -> list[TopicListing]:
        return [TopicListing._make(t) for t in self._native.list_topics()]

    def describe_topic(self, name: str) -> TopicDescription:
        parts, configs = self._native.describe_topic(name)
        return TopicDescription(name, [PartitionInfo._make(p) for p in parts], configs)

    def list_groups(self) -> list[GroupListing]:
        return [GroupListing._make(g) for g in self._native.list_groups()]

    def describe_group(self, group_id: str) -> GroupDescription:
        state, generation, members, offsets = self._native.describe_group(group_id)
        return GroupDescription(
            group_id,
            state,
            generation,
            [MemberDescription(m, c, [TopicPartition(t, p) for t, p in a]) for m, c, a in members],
            {TopicPartition(t, p): o for t, p, o in offsets},
        )

    def list_offsets(
        self, specs: Iterable[tuple[str, int, OffsetSpec]]
    ) -> list[ListedOffset | SluicewayError]:
        """One answer per ``(topic, partition, "earliest" | "latest" | timestamp ms)``."""
        return [
            r if isinstance(r, SluicewayError) else ListedOffset._make(r)  # type: ignore[arg-type]
            for r in self._native.list_offsets(list(specs))
        ]

    def close(self) -> None:
        """Nothing to release; for symmetry with the other clients."""

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
