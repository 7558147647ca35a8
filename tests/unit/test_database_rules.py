"""Database credentials: names, quoting, the credentials Secret, rotation, status — by table."""

from __future__ import annotations

import base64
import datetime
from pathlib import Path

import pytest

from controller.databases.config import ConfigError, load_servers
from rules import database as rules

NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
SERVER = rules.Server(name="default", host="pg.db.svc", port=5432, sslmode="require", admin_secret="pg-admin")


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
def test_rotate_every_durations(text: str, expected: datetime.timedelta) -> None:
    assert rules.rotation_period(text) == expected


@pytest.mark.parametrize("text", ["", "a week", "10d", "h"])
def test_bad_rotate_every_durations_say_what_a_good_one_looks_like(text: str) -> None:
    with pytest.raises(ValueError, match=r"rotateEvery .* like 720h"):
        rules.rotation_period(text)


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


# ---- where the credentials go next, and what a crash leaves --------------------------------------------------

V1, V2 = "shop_orders_v1", "shop_orders_v2"
OLD, NEW = "O" * 40, "N" * 40


def current(user: str = V1, password: str = OLD) -> dict[str, str]:
    return rules.credentials(user=user, password=password, server=SERVER, database="shop_orders")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param(
            {"current": None, "pending": None, "request": "r1"},
            rules.Target(V1, NEW, None, new=True, rotation_seen="r1"),
            id="first-login-is-new-and-a-request-before-it-counts-as-seen",
        ),
        pytest.param(
            {"current": None, "pending": rules.Pending(V1, OLD)},
            rules.Target(V1, OLD, None, new=True),
            id="a-first-login-on-its-way-in-is-finished-not-replaced",
        ),
        pytest.param({}, rules.Target(V1, OLD, None, new=False), id="in-place-nothing-new"),
        pytest.param(
            {"due": True, "request": "r1"},
            rules.Target(V2, NEW, V1, new=True, rotation=True, rotation_seen="r1"),
            id="a-due-rotation-makes-the-next-login-and-keeps-the-current-one",
        ),
        pytest.param(
            {"due": True, "previous": "shop_orders_v0"},
            rules.Target(V1, OLD, "shop_orders_v0", new=False),
            id="no-rotation-while-the-previous-login-is-still-kept",
        ),
        pytest.param(
            {"pending": rules.Pending(V2, NEW, "r1"), "request": "r2", "due": True},
            rules.Target(V2, NEW, V1, new=True, rotation=True, rotation_seen="r1"),
            id="a-rotation-cut-short-by-a-crash-is-finished-with-its-own-password",
        ),
        pytest.param(
            {"current": current(V2, NEW), "pending": rules.Pending(V2, NEW, "r1"), "previous": V1},
            rules.Target(V2, NEW, V1, new=False),
            id="a-committed-rotation-leaves-only-the-rotation-secret-to-delete",
        ),
        pytest.param(
            {"pending": rules.Pending(V2, "")},
            rules.Target(V1, OLD, None, new=False),
            id="an-empty-rotation-secret-holds-nothing-live",
        ),
        pytest.param(
            {"current": {"POSTGRES_USER": V1}},
            rules.Target(V1, NEW, None, new=True),
            id="a-secret-stripped-of-its-password-gets-a-new-one-on-the-same-login",
        ),
    ],
)
def test_the_target_finishes_what_is_on_its_way_in_before_anything_new(
    kwargs: dict[str, object], expected: rules.Target
) -> None:
    arguments: dict[str, object] = {
        "namespace": "shop",
        "name": "orders",
        "current": current(),
        "previous": None,
        "pending": None,
        "due": False,
        "request": None,
        **kwargs,
    }

    assert rules.target(new_password=lambda: NEW, **arguments) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("crash_after", [0, 1, 2, 3], ids=["rotation-secret", "server", "credentials", "cleanup"])
def test_a_crash_after_any_write_of_a_rotation_never_loses_a_password_the_server_accepts(crash_after: int) -> None:
    """The writes of a rotation, in the edge's order: 0 the rotation Secret, 1 the server, 2 the credentials Secret,
    3 the rotation Secret deleted. After a crash at any of them, a password the server accepts for the new login is
    in one of the two Secrets, and the restarted reconcile finishes the rotation with that same password."""
    passwords = iter(["P" * 40, "Q" * 40])
    secret, server = current(), {V1: OLD}

    def plan(secret: dict[str, str], previous: str | None, pending: rules.Pending | None) -> rules.Target:
        return rules.target(
            namespace="shop",
            name="orders",
            current=secret,
            previous=previous,
            pending=pending,
            due=True,
            request=None,
            new_password=lambda: next(passwords),
        )

    target = plan(secret, None, None)
    assert (target.user, target.new, target.rotation) == (V2, True, True)

    stored: rules.Pending | None = target.pending
    if crash_after >= 1:
        server[target.user] = target.password
    if crash_after >= 2:
        secret = current(target.user, target.password)
    if crash_after >= 3:
        stored = None

    if V2 in server:
        kept = {secret["POSTGRES_PASSWORD"]} | ({stored.password} if stored is not None else set())
        assert server[V2] in kept
    previous = V1 if secret["POSTGRES_USER"] == V2 else None
    resumed = plan(secret, previous, stored)
    assert (resumed.user, resumed.password, resumed.previous) == (V2, target.password, V1)


@pytest.mark.parametrize(
    ("readers", "now", "drop", "waiting", "opted_out"),
    [
        pytest.param([], NOW, True, (), (), id="no-readers-drop-at-once"),
        pytest.param(
            [rules.Reader("deployment/api", rolled=True, opted_out=False)], NOW, True, (), (), id="all-rolled"
        ),
        pytest.param(
            [rules.Reader("deployment/api", rolled=False, opted_out=False)],
            NOW,
            False,
            ("deployment/api",),
            (),
            id="a-reader-still-rolling-is-waited-for",
        ),
        pytest.param(
            [rules.Reader("deployment/legacy", rolled=False, opted_out=True)],
            NOW,
            False,
            ("deployment/legacy",),
            ("deployment/legacy",),
            id="an-opted-out-reader-is-waited-for-and-named",
        ),
        pytest.param(
            [rules.Reader("deployment/legacy", rolled=False, opted_out=True)],
            NOW + datetime.timedelta(hours=1),
            True,
            ("deployment/legacy",),
            ("deployment/legacy",),
            id="until-the-grace-period-ends-exactly",
        ),
        pytest.param(
            [rules.Reader("deployment/legacy", rolled=True, opted_out=True)],
            NOW,
            True,
            (),
            (),
            id="an-opted-out-reader-restarted-by-its-owner-counts-as-rolled",
        ),
    ],
)
def test_the_previous_login_is_dropped_once_readers_have_rolled_or_the_grace_period_ends(
    readers: list[rules.Reader],
    now: datetime.datetime,
    drop: bool,
    waiting: tuple[str, ...],
    opted_out: tuple[str, ...],
) -> None:
    plan = rules.retirement(readers, rotated_at=NOW, grace=datetime.timedelta(hours=1), now=now)

    assert (plan.drop, plan.waiting, tuple(r.name for r in plan.opted_out)) == (drop, waiting, opted_out)
    assert plan.drop_at == NOW + datetime.timedelta(hours=1)


def test_the_status_names_the_readers_that_opted_out_and_when_the_old_login_goes() -> None:
    readers = [
        rules.Reader("deployment/api", rolled=False, opted_out=False),
        rules.Reader("deployment/legacy", rolled=False, opted_out=True),
    ]
    plan = rules.retirement(readers, rotated_at=NOW, grace=datetime.timedelta(hours=1), now=NOW)

    message = rules.retirement_message(V1, plan)

    assert message == (
        "rotation: shop_orders_v1 kept until deployment/api, deployment/legacy have rolled, at the latest "
        '2026-11-26T13:00:00Z; not rolled automatically (auto-rollout "false"), they lose shop_orders_v1 then unless '
        "restarted: deployment/legacy"
    )
    assert "2026-11-26T13:00:00Z" in rules.opted_out_warning("orders-credentials", V1, plan.drop_at)


def test_the_rotation_secret_name_is_unambiguous_and_fits() -> None:
    assert rules.rotation_secret_name("shop", "orders") == "database-rotation.shop.orders"
    assert rules.rotation_secret_name("a-b", "c") != rules.rotation_secret_name("a", "b-c")
    long = rules.rotation_secret_name("n" * 63, "d" * 241)
    assert len(long) <= 253
    assert long != rules.rotation_secret_name("n" * 63, "e" * 241)


@pytest.mark.parametrize(
    ("namespace", "name", "kept"),
    [
        pytest.param("n" * 31, "d" * 31, True, id="63-bytes-kept-as-they-are"),
        pytest.param("n" * 31, "d" * 32, False, id="64-bytes-cut-to-63-with-a-digest"),
    ],
)
def test_an_owner_role_of_exactly_63_bytes_is_kept_and_one_more_byte_is_fitted(
    namespace: str, name: str, kept: bool
) -> None:
    full = f"{namespace}_{name}"

    role = rules.owner_role(namespace, name)

    assert len(role.encode()) <= rules.MAX_IDENTIFIER == 63
    assert (role == full) is kept
    if not kept:
        assert len(role) == 63
        assert role.startswith(full[:54])
        assert role != rules.owner_role(namespace, name + "x")  # the digest keeps cut names apart


@pytest.mark.parametrize(
    ("base", "kept"),
    [
        pytest.param("n" * 30 + "_" + "d" * 29, True, id="60-bytes-and-_v1-make-63"),
        pytest.param("n" * 30 + "_" + "d" * 30, False, id="61-bytes-and-_v1-make-64"),
    ],
)
def test_a_login_role_of_exactly_63_bytes_is_kept_and_its_generation_always_survives(base: str, kept: bool) -> None:
    namespace, name = base.split("_")

    login = rules.login_role(namespace, name, 1)

    assert len(login) <= 63
    assert (login == base + "_v1") is kept
    assert login.endswith("_v1")
    assert rules.generation_of(login) == 1


def test_a_schedule_due_exactly_now_rotates() -> None:
    on_time = rules.rotation(
        rotate_every="720h", rotate_request=None, seen_request=None, rotated_at=NOW - 720 * HOUR, now=NOW
    )
    a_second_early = rules.rotation(
        rotate_every="720h",
        rotate_request=None,
        seen_request=None,
        rotated_at=NOW - 720 * HOUR + datetime.timedelta(seconds=1),
        now=NOW,
    )

    assert (on_time.due, on_time.reason) == (True, "scheduled")
    assert (a_second_early.due, a_second_early.next_check) == (False, datetime.timedelta(seconds=1))
