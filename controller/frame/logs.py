"""Reconcile log lines: every line logged inside a reconcile carries the loop, the object (its kind, namespace and
name) and the outcome the line tells, as structured fields: ``loop``, ``object``, ``outcome`` (``kubeio.logs`` prints
them as JSON with ``--log-format json``). Fields are names and outcomes only, never a value."""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Hashable, Iterator, MutableMapping
from typing import Any

_current: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("reconciling", default=None)


def subject_of(key: Hashable) -> dict[str, str]:
    """The object a queue key stands for: (kind, namespace, name), (namespace, name), or a namespace's name."""
    if isinstance(key, tuple) and len(key) == 3:
        return {"kind": str(key[0]), "namespace": str(key[1]), "name": str(key[2])}
    if isinstance(key, tuple) and len(key) == 2:
        return {"namespace": str(key[0]), "name": str(key[1])}
    return {"kind": "Namespace", "name": str(key)}


@contextlib.contextmanager
def reconciling(loop: str, key: Hashable) -> Iterator[None]:
    """Within it, every ``ReconcileLog`` line is about this key of this loop."""
    token = _current.set({"loop": loop, "object": subject_of(key)})
    try:
        yield
    finally:
        _current.reset(token)


def outcome(name: str) -> dict[str, str]:
    """``extra=`` of a reconcile log line: what the reconcile did or found (``rolled-out``, ``held``, ``retry``…)."""
    return {"outcome": name}


class ReconcileLog(logging.LoggerAdapter[logging.Logger]):
    """A logger for reconcile code: adds the current reconcile's fields (and ``outcome: progress`` when a line names
    none) to each record's ``extra``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        fields: dict[str, Any] = {"outcome": "progress", **(_current.get() or {})}
        fields.update(kwargs.get("extra") or {})
        kwargs["extra"] = fields
        return msg, kwargs


def reconcile_logger(name: str) -> ReconcileLog:
    return ReconcileLog(logging.getLogger(name), {})


class ReconcileFields(logging.Filter):
    """For a handler: a line that code outside the loops logs during a reconcile (an Event that could not be
    recorded, a watch) gets the reconcile's fields too."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = _current.get()
        if current is not None and not hasattr(record, "object"):
            for key, value in {"outcome": "progress", **current}.items():
                setattr(record, key, value)
        return True


def tag_reconcile_lines() -> None:
    """Every handler of the root logger adds the reconcile's fields to the lines it writes."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(ReconcileFields())
