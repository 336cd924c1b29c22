"""The log line formats (text or JSON) and the request id every record carries: stdlib only,
so the dealing parent (app.dealer) logs as the workers do without importing the web stack."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final

# Fields of the access record that the JSON formatter writes as their own keys.
ACCESS_FIELDS: Final = (
    "method",
    "path",
    "route",
    "model",
    "status",
    "latency_ms",
    "bytes_in",
    "bytes_out",
)

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Stamps every record with the id of the request it was logged in ('-' outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


# Control characters (CR, LF, ESC, ...) in a logged value are written as \xNN, so a '%0A' in a
# request path or a crafted filename cannot start a forged line in the text log.
_CONTROL: Final = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, 0x85, 0x2028, 0x2029)}


def escape_control(text: str) -> str:
    return text.translate(_CONTROL)


class TextFormatter(logging.Formatter):
    """One line per record: the message is escaped; only a traceback may add lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = escape_control(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            # RFC 3339 in UTC with milliseconds (it was local time to the second, no zone: log
            # pipelines could neither order a request's lines nor place them in time).
            "ts": datetime.fromtimestamp(record.created, tz=UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "msg": record.getMessage(),
        }
        for key in ACCESS_FIELDS:
            if key in record.__dict__:
                payload[key] = record.__dict__[key]
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload)


def configure_app_logger(log_format: str, log_level: str) -> logging.Handler:
    """The "app" loggers write one line per record to stderr, in `log_format` ("json" or
    "text"); the handler, for other loggers to share."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            TextFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")
        )
    root = logging.getLogger("app")
    root.handlers[:] = [handler]
    root.setLevel(log_level)
    root.propagate = False
    return handler


class PeerNoise(logging.LoggerAdapter):  # type: ignore[type-arg]
    """uvicorn's protocol logger with its warnings at DEBUG: each was about bytes a client sent
    ("Invalid HTTP request received.", upgrades), so any client could add a line per
    connection (526 in fuzz round 22). Such a request is answered 400 as problem+json."""

    @property
    def level(self) -> int:
        return int(self.logger.level)

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.logger.debug(msg, *args, **kwargs)
