"""The serving options: where the server listens, how it batches, what it accepts."""

from __future__ import annotations

import os
from dataclasses import dataclass

from m6gen.config import ConfigError, at_least, option

API_KEY_ENV = "M6GEN_API_KEY"


@dataclass
class ServeArgs:
    """Where ``m6gen serve`` listens, how it gathers requests into batches and which requests it refuses."""

    _argument_group_name = "serving"

    host: str = option("127.0.0.1", "address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface)")
    port: int = option(8000, "TCP port to listen on (0: any free port; the address is printed at start)")
    max_batch: int | None = option(
        None, "most requests gathered into one beam-search batch (default: --batch-size; 1: one request at a time)"
    )
    max_wait_ms: float = option(5.0, "how long an idle model worker waits for more requests before it runs a batch")
    api_key: str | None = option(
        None,
        f"key required on every endpoint but /health, as X-API-Key, Authorization: Bearer or Basic password "
        f"(default: ${API_KEY_ENV}; none: no key)",
    )
    max_body_bytes: int = option(1_000_000, "largest request body in bytes; a bigger one is refused with 413")
    max_history_items: int = option(
        1000, "most items a request's history (or exclude list) may hold; a longer one is refused with 422, not cut"
    )

    def __post_init__(self):
        if not isinstance(self.host, str) or not self.host.strip():
            raise ConfigError(f"host: expected an address such as 127.0.0.1, got {self.host!r}")
        at_least(self, 0, "port")
        if self.port > 65535:
            raise ConfigError(f"port: expected 0..65535, got {self.port!r}")
        at_least(self, 1, "max_batch", optional=True)
        at_least(self, 0, "max_wait_ms")
        if self.max_wait_ms > 10_000:
            raise ConfigError(f"max_wait_ms: at most 10000 (ten seconds), got {self.max_wait_ms!r}")
        at_least(self, 1024, "max_body_bytes")
        at_least(self, 1, "max_history_items")
        if self.api_key is None:
            self.api_key = os.environ.get(API_KEY_ENV) or None
        _check_key(self.api_key)

    def public(self) -> dict:
        """The options as /info shows them: the key itself never, only whether one is required."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["api_key"] = self.api_key is not None
        return out


def _check_key(key: str | None) -> None:
    """A key travels in an HTTP header: printable ASCII without spaces, and long enough to guess badly."""
    if key is None:
        return
    if not key.isascii() or not key.isprintable() or " " in key:
        raise ConfigError(f"api_key: printable ASCII without spaces expected (${API_KEY_ENV} included)")
    if len(key) < 8:
        raise ConfigError(f"api_key: at least 8 characters, got {len(key)}")
