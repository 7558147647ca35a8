"""Database credentials: names, quoting, the credentials Secret, rotation, status — by table."""

from __future__ import annotations

import base64
import datetime
from pathlib import Path

import pytest

from controller.databases import ConfigError, load_servers
from rules import database as rules

NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
SERVER = rules.Server(name="default", host="pg.db.svc", port=5432, sslmode="require", admin_secret="pg-admin")


def test_passwords_come_from_a_csprng_alphanumeric_and_long() -> None:
    passwords = {rules.generate_password() for _ in range(50)}

    assert len(passwords) == 50
    assert all(len(p) >= 32 and p.isalnum() and p.isascii() for p in passwords)
    assert all(len(p.encode()) < 72 for p in passwords)


@pytest.mark.parametrize(
    ("namespace", "name", "owner", "login"),
    [
        pytest.param("shop", "orders", "shop_orders", "shop_orders_v3", id="short"),
        pytest.param("a" * 40, "b" * 40, ("a" * 40 + "_" + "b" * 40)[:54], None, id="long-names-fit-63-bytes"),
    ],
)
def test_role_and_database_names(namespace: str, name: str, owner: str, login: str | None) -> None:
    assert rules.owner_role(namespace, name).startswith(owner)
    assert len(rules.owner_role(namespace, name)) <= 63
    assert len(rules.login_role(namespace, name, 12)) <= 63
    assert rules.owner_role(namespace, name) != rules.login_role(namespace, name, 3)
    if login is not None:
        assert rules.login_role(namespace, name, 3) == login
    assert rules.generation_of(rules.login_role(namespace, name, 7)) == 7


@pytest.mark.parametrize(
    ("text", "ident", "literal"),
    [
        pytest.param("plain", '"plain"', "'plain'", id="plain"),
        pytest.param('we"ird', '"we""ird"', "'we\"ird'", id="double-quote"),
        pytest.param("it's", '"it\'s"', "'it''s'", id="single-quote"),
    ],
)
def test_quoting(text: str, ident: str, literal: str) -> None:
    assert rules.quote_ident(text) == ident
    assert rules.quote_literal(text) == literal


def test_the_credentials_have_exactly_the_six_keys_and_a_percent_encoded_url() -> None:
    data = rules.credentials(user="shop_orders_v1", password="p@ss/word:x", server=SERVER, database="shop_orders")

    assert set(data) == set(rules.KEYS)
    assert (
        data["DATABASE_URL"]
        == "postgresql://shop_orders_v1:p%40ss%2Fword%3Ax@pg.db.svc:5432/shop_orders?sslmode=require"
    )
    assert data["POSTGRES_PORT"] == "5432"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("720h", datetime.timedelta(hours=720)),
        ("90m", datetime.timedelta(minutes=90)),
        ("1h30m", datetime.timedelta(minutes=90)),
        ("45s", datetime.timedelta(seconds=45)),
    ],
)
def test_durations(text: str, expected: datetime.timedelta) -> None:
    assert rules.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "a week", "10d", "h"])
def test_bad_durations_say_what_a_good_one_looks_like(text: str) -> None:
    with pytest.raises(ValueError, match="like 720h"):
        rules.parse_duration(text)


HOUR = datetime.timedelta(hours=1)


@pytest.mark.parametrize(
    ("every", "asked", "seen", "rotated_at", "due", "reason"),
    [
        pytest.param(None, None, None, NOW - 1000 * HOUR, False, "", id="no-schedule-no-request"),
        pytest.param(None, "1", None, NOW, True, "requested", id="first-request"),
        pytest.param(None, "1", "1", NOW, False, "", id="request-already-acted-on"),
        pytest.param(None, "2", "1", NOW, True, "requested", id="new-request"),
        pytest.param("720h", None, None, NOW - 721 * HOUR, True, "scheduled", id="schedule-due"),
        pytest.param("720h", None, None, NOW - 10 * HOUR, False, "", id="schedule-not-due"),
    ],
)
def test_rotation_is_due_on_request_or_schedule(
    every: str | None, asked: str | None, seen: str | None, rotated_at: datetime.datetime, due: bool, reason: str
) -> None:
    plan = rules.rotation(rotate_every=every, rotate_request=asked, seen_request=seen, rotated_at=rotated_at, now=NOW)

    assert (plan.due, plan.reason) == (due, reason)


def test_a_schedule_not_due_says_when_to_look_again() -> None:
    plan = rules.rotation(
        rotate_every="720h", rotate_request=None, seen_request=None, rotated_at=NOW - 20 * HOUR, now=NOW
    )

    assert plan.next_check == 700 * HOUR


def test_the_ready_condition_keeps_its_transition_time_while_its_status_stays() -> None:
    first = rules.ready_condition("True", "Provisioned", "ok", previous=None, generation=1, now=NOW)
    same = rules.ready_condition("True", "Provisioned", "ok", previous=first, generation=2, now=NOW + HOUR)
    flipped = rules.ready_condition("False", "ServerUnavailable", "down", previous=same, generation=2, now=NOW + HOUR)

    assert same["lastTransitionTime"] == first["lastTransitionTime"] == "2026-11-26T12:00:00Z"
    assert flipped["lastTransitionTime"] == "2026-11-26T13:00:00Z"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param("servers: {}", "at least one named server", id="no-servers"),
        pytest.param("servers: {default: {host: x}}", "needs host and adminSecret", id="no-admin-secret"),
        pytest.param("servers: {default: {host: x, adminSecret: a, sslmode: maybe}}", "sslmode 'maybe'", id="sslmode"),
        pytest.param("servers: [", "cannot read", id="not-yaml"),
    ],
)
def test_a_bad_server_config_is_refused_with_what_to_fix(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "databases.yaml"
    path.write_text(text)

    with pytest.raises(ConfigError, match=error):
        load_servers(path)


def test_the_scram_verifier_matches_the_rfc_7677_example_construction() -> None:
    # RFC 7677's example: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations.
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")

    verifier = rules.scram_verifier("pencil", salt=salt)

    assert verifier.startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")
    _stored, server = verifier.split("$")[2].split(":")
    assert server == "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
    assert "pencil" not in verifier
