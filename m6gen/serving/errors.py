"""The one error a request can cause: an HTTP 4xx status, the field at fault and a message saying what was expected."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request the server refuses; becomes ``{"error": message, "field": field, ...extra}`` with ``status``.

    ``field`` names the part of the request at fault the way a client spells it: ``k``,
    ``history[3]``, ``body`` (the body as a whole), ``q`` (a query parameter), ``authorization``.
    """

    def __init__(self, status: int, field: str | None, message: str, **extra: Any):
        prefix = f"{field}: " if field else ""
        super().__init__(prefix + message)
        self.status, self.field, self.message, self.extra = status, field, prefix + message, extra

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "field": self.field, **self.extra}
