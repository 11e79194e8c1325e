"""Logging for every slotengine process: one JSON object a line, or plain text for a terminal.

Records carry the ids they are about (slot_id, booking_id, event) as fields of their own, so
a log pipeline can follow one slot or one booking across the API, workers and scheduler.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

CONTEXT_FIELDS = ("slot_id", "booking_id", "event", "task")

# A log line quotes at most this much of anything a client sent, so that logging a refusal
# never costs a byte of log for each byte received.
EXCERPT_CHARS = 500


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """`text` cut to `limit` characters, ending in "…" when it was cut."""
    return text if len(text) <= limit else text[:limit] + "…"


class BoundedRequestLine(logging.Filter):
    """Cuts the path of uvicorn's access lines: a GET query string can carry a whole document."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn logs '%s - "%s %s HTTP/%s" %d' with (client, method, path and query, version, status).
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], excerpt(args[2]), args[3], args[4])
        return True


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: time, level, logger, message, context fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str, fmt: str) -> None:
    """Send the engine's logs to stderr at `level`, as JSON lines or as text."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("slotengine", "workers"):
        engine_log = logging.getLogger(name)
        engine_log.handlers[:] = [handler]
        engine_log.setLevel(level.upper())
        engine_log.propagate = False
    access_log = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, BoundedRequestLine) for f in access_log.filters):
        access_log.addFilter(BoundedRequestLine())
