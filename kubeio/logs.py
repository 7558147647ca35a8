"""How both processes log: text for humans (the default), or one JSON object a line for a log pipeline.

``--log-format json`` prints ``time``, ``level``, ``logger`` and ``message``, and every field a line was given with
``extra=`` — the controller's reconcile lines carry ``loop``, ``object`` (kind, namespace, name) and ``outcome``.
Fields are what the code chose to log: names, keys, reasons; never a Secret's value or a password (the messages
are the same as in text).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# What every LogRecord has of its own: anything else on a record came from ``extra=``.
RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((key, value) for key, value in vars(record).items() if key not in RECORD_FIELDS)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="INFO", choices=LEVELS)
    parser.add_argument(
        "--log-format", default="text", choices=FORMATS, help="text for humans, json for a log pipeline (one per line)"
    )


def configure(level: str, log_format: str) -> None:
    """The root logger, on stderr, in the chosen format."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=level, handlers=[handler])
