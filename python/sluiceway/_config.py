"""Client configuration: Kafka's dotted keys as strings, passed to the core unchanged.

``Producer({"linger.ms": 5}, acks="all")``: a dict of dotted names and keyword arguments with
underscores (``linger_ms`` → ``linger.ms``) are merged into one ``str → str`` map. The core
validates every key and value (an unknown key is an ``InvalidConfigError`` naming it), so a new
core setting needs no change here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Union

ConfigValue = Union[str, int, float, bool, "list[str]", "tuple[str, ...]"]


def _text(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    raise TypeError(f"config {key!r} must be str, int, float, bool or a list of str, not {type(value).__name__}")


def config_map(config: Mapping[str, ConfigValue] | None, kwargs: Mapping[str, ConfigValue]) -> dict[str, str]:
    """The core's key/value map from a dict of dotted names and underscore keyword arguments."""
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict of Kafka config names, not {type(config).__name__}")
    out: dict[str, str] = {}
    for key, value in (config or {}).items():
        if not isinstance(key, str):
            raise TypeError(f"config keys must be str, not {type(key).__name__}")
        out[key] = _text(key, value)
    for name, value in kwargs.items():
        key = "offset.store.dir" if name == "offset_store" else name.replace("_", ".")
        out[key] = _text(name, value)
    return out
