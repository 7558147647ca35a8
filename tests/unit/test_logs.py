"""Logs: text stays the default; --log-format json gives one JSON object a line, and every reconcile line carries
the loop, the object and the outcome as fields."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

import controller.__main__ as controller_cli
import webhook.__main__ as webhook_cli
from controller.frame import loop as frame
from controller.frame.logs import ReconcileFields, outcome, reconcile_logger, reconciling
from controller.frame.metrics import ControllerMetrics
from controller.frame.queue import WorkQueue
from kubeio import logs as kubeio_logs
from kubeio.logs import TEXT_FORMAT, JsonFormatter, formatter
from kubeio.rest import ApiException

log = reconcile_logger("tests.reconcile")


def record(message: str, **extra: object) -> logging.LogRecord:
    found = logging.LogRecord("controller.rollouts", logging.INFO, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(found, key, value)
    return found


def test_a_json_line_has_the_message_and_every_field_it_was_given() -> None:
    line = JsonFormatter().format(
        record("rolled out web", loop="rollouts", object={"namespace": "shop", "name": "web"}, outcome="rolled-out")
    )

    entry = json.loads(line)
    assert entry["message"] == "rolled out web"
    assert (entry["level"], entry["logger"]) == ("INFO", "controller.rollouts")
    assert entry["object"] == {"namespace": "shop", "name": "web"}
    assert (entry["loop"], entry["outcome"]) == ("rollouts", "rolled-out")
    assert entry["time"].endswith("Z")
    assert "\n" not in line


def test_text_is_the_default_of_both_entrypoints_and_json_is_a_choice() -> None:
    assert formatter("text")._fmt == TEXT_FORMAT
    assert webhook_cli.parser().parse_args([]).log_format == "text"
    assert webhook_cli.parser().parse_args(["--log-format", "json"]).log_format == "json"
    with pytest.raises(SystemExit):
        webhook_cli.parser().parse_args(["--log-format", "xml"])


def test_the_controller_takes_the_log_format_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    configured: list[tuple[str, str]] = []

    async def run(settings: object) -> int:
        return 0

    monkeypatch.setattr(controller_cli, "run", run)
    monkeypatch.setattr(kubeio_logs, "configure", lambda level, fmt: configured.append((level, fmt)))

    assert controller_cli.main(["--log-format", "json", "--log-level", "DEBUG"]) == 0
    assert configured == [("DEBUG", "json")]


async def test_every_reconcile_line_names_the_object_and_the_outcome(caplog: pytest.LogCaptureFixture) -> None:
    attempts = 0

    async def reconcile(key: tuple[str, str]) -> None:
        nonlocal attempts
        attempts += 1
        log.info("provisioning %s/%s", *key, extra=outcome("provisioning"))
        if attempts == 1:
            raise ApiException(status=503, reason="Service Unavailable")

    queue: WorkQueue[tuple[str, str]] = WorkQueue(base_delay=0.001)
    loop = frame.Loop("databases", queue, [], reconcile)
    queue.add(("shop", "orders"))
    caplog.set_level(logging.DEBUG)
    worker = asyncio.create_task(frame.work(loop, ControllerMetrics()))
    try:
        for _ in range(200):
            await asyncio.sleep(0.005)
            if any(getattr(r, "outcome", None) == "done" for r in caplog.records if r.name == "controller.frame.loop"):
                break
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)

    lines = [r for r in caplog.records if r.name in ("tests.reconcile", "controller.frame.loop")]
    assert [getattr(r, "outcome", None) for r in lines] == ["provisioning", "retry", "provisioning", "done"]
    for line in lines:
        assert getattr(line, "loop", None) == "databases"
        assert getattr(line, "object", None) == {"namespace": "shop", "name": "orders"}
    entry = json.loads(JsonFormatter().format(lines[1]))
    assert entry["object"] == {"namespace": "shop", "name": "orders"}
    assert entry["outcome"] == "retry"


def test_a_line_logged_outside_the_loops_during_a_reconcile_gets_its_fields_too() -> None:
    plain = record("could not record the Event")
    with reconciling("registry", "shop"):
        ReconcileFields().filter(plain)
    outside = record("caches synced")
    ReconcileFields().filter(outside)

    assert json.loads(JsonFormatter().format(plain))["object"] == {"kind": "Namespace", "name": "shop"}
    assert (getattr(plain, "loop", None), getattr(plain, "outcome", None)) == ("registry", "progress")
    assert not hasattr(outside, "object")
