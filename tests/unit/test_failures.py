"""One definition of "transient" for the whole product: the status table, and the exceptions the edges catch."""

from __future__ import annotations

import json
import socket
import ssl

import aiohttp
import pytest

from kubeio.errors import conflict, describe_error, transient
from kubeio.rest import ApiException
from rules.failures import InvalidSpec, transient_status


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(None, True, id="no-answer"),
        pytest.param(0, True, id="no-status"),
        pytest.param(400, False, id="400-bad-request"),
        pytest.param(401, False, id="401-unauthorized"),
        pytest.param(403, False, id="403-forbidden"),
        pytest.param(404, False, id="404-not-found"),
        pytest.param(408, True, id="408-request-timeout"),
        pytest.param(409, True, id="409-conflict"),
        pytest.param(410, False, id="410-gone-is-the-informers-to-relist"),
        pytest.param(422, False, id="422-invalid"),
        pytest.param(425, True, id="425-too-early"),
        pytest.param(429, True, id="429-too-many-requests"),
        pytest.param(500, True, id="500-internal"),
        pytest.param(503, True, id="503-unavailable"),
        pytest.param(504, True, id="504-gateway-timeout"),
    ],
)
def test_which_statuses_are_transient(status: int | None, expected: bool) -> None:
    assert transient_status(status) is expected
    assert transient(ApiException(status=status, reason="x")) is expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(TimeoutError(), True, id="timeout"),
        pytest.param(ConnectionResetError(), True, id="connection-reset"),
        pytest.param(ConnectionRefusedError(), True, id="connection-refused"),
        pytest.param(socket.gaierror(), True, id="name-not-resolved"),
        pytest.param(aiohttp.ServerDisconnectedError(), True, id="server-disconnected"),
        pytest.param(aiohttp.ClientPayloadError("cut"), True, id="payload-cut-short"),
        pytest.param(FileNotFoundError(), False, id="missing-file"),
        pytest.param(ssl.SSLError(), False, id="tls-handshake"),
        pytest.param(InvalidSpec("rotateEvery 'a week'"), False, id="invalid-spec"),
        pytest.param(KeyError("key"), False, id="a-bug"),
        pytest.param(json.JSONDecodeError("x", "doc", 0), False, id="garbled-answer"),
    ],
)
def test_which_exceptions_are_transient(error: BaseException, expected: bool) -> None:
    assert transient(error) is expected


def test_only_409_is_a_conflict() -> None:
    assert conflict(ApiException(status=409))
    assert not conflict(ApiException(status=500))
    assert not conflict(TimeoutError())


def test_an_api_error_is_described_by_status_and_message_never_by_its_body() -> None:
    error = ApiException(status=422, reason="Unprocessable Entity")
    error.body = json.dumps(
        {"kind": "Status", "message": 'Secret "x" is invalid: data[K]: Too long', "details": {"data": "c2VjcmV0"}}
    ).encode()

    assert describe_error(error) == 'HTTP 422 Unprocessable Entity: Secret "x" is invalid: data[K]: Too long'
    assert describe_error(ApiException(status=403, reason="Forbidden")) == "HTTP 403 Forbidden"
    assert describe_error(ConnectionResetError()) == "ConnectionResetError"
