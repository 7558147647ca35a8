"""Database credentials: names, quoting, the credentials Secret, rotation, status — by table."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ssl
from pathlib import Path

import pytest

from controller.databases.config import ConfigError, load_servers
from controller.databases.postgres import ssl_for
from rules import database as database_rules
from rules.certs import make_ca

NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
SERVER = database_rules.Server(name="default", host="pg.db.svc", port=5432, sslmode="require", admin_secret="pg-admin")


@pytest.mark.parametrize(
    ("namespace", "name", "owner", "login"),
    [
        pytest.param("shop", "orders", "shop_orders", "shop_orders_v3", id="short"),
        pytest.param("a" * 40, "b" * 40, "a" * 35 + "__", None, id="long-names-fit-63-bytes"),
    ],
)
def test_role_and_database_names(namespace: str, name: str, owner: str, login: str | None) -> None:
    assert database_rules.owner_role(namespace, name).startswith(owner)
    assert len(database_rules.owner_role(namespace, name)) <= 63
    assert len(database_rules.login_role(namespace, name, 12)) <= 63
    assert database_rules.owner_role(namespace, name) != database_rules.login_role(namespace, name, 3)
    if login is not None:
        assert database_rules.login_role(namespace, name, 3) == login
    assert database_rules.generation_of(database_rules.login_role(namespace, name, 7)) == 7


@pytest.mark.parametrize(
    ("text", "ident", "literal"),
    [
        pytest.param("plain", '"plain"', "'plain'", id="plain"),
        pytest.param('we"ird', '"we""ird"', "'we\"ird'", id="double-quote"),
        pytest.param("it's", '"it\'s"', "'it''s'", id="single-quote"),
    ],
)
def test_quoting(text: str, ident: str, literal: str) -> None:
    assert database_rules.quote_ident(text) == ident
    assert database_rules.quote_literal(text) == literal


def test_the_credentials_have_exactly_the_six_keys_and_a_percent_encoded_url() -> None:
    data = database_rules.credentials(
        user="shop_orders_v1", password="p@ss/word:x", server=SERVER, database="shop_orders"
    )

    assert set(data) == set(database_rules.KEYS)
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
    assert database_rules.rotation_period(text) == expected


@pytest.mark.parametrize("text", ["", "a week", "10d", "h"])
def test_bad_rotate_every_durations_say_what_a_good_one_looks_like(text: str) -> None:
    with pytest.raises(ValueError, match=r"rotateEvery .* like 720h"):
        database_rules.rotation_period(text)


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
    plan = database_rules.rotation(
        rotate_every=every, rotate_request=asked, seen_request=seen, rotated_at=rotated_at, now=NOW
    )

    assert (plan.due, plan.reason) == (due, reason)


def test_a_schedule_not_due_says_when_to_look_again() -> None:
    plan = database_rules.rotation(
        rotate_every="720h", rotate_request=None, seen_request=None, rotated_at=NOW - 20 * HOUR, now=NOW
    )

    assert plan.next_check == 700 * HOUR


def test_the_ready_condition_keeps_its_transition_time_while_its_status_stays() -> None:
    first = database_rules.ready_condition("True", "Provisioned", "ok", previous=None, generation=1, now=NOW)
    same = database_rules.ready_condition("True", "Provisioned", "ok", previous=first, generation=2, now=NOW + HOUR)
    flipped = database_rules.ready_condition(
        "False", "ServerUnavailable", "down", previous=same, generation=2, now=NOW + HOUR
    )

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

    verifier = database_rules.scram_verifier("pencil", salt=salt)

    assert verifier.startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")
    _stored, server = verifier.split("$")[2].split(":")
    assert server == "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
    assert "pencil" not in verifier


# ---- where the credentials go next, and what a crash leaves --------------------------------------------------

V1, V2 = "shop_orders_v1", "shop_orders_v2"
OLD, NEW = "O" * 40, "N" * 40
V3 = "shop_orders_v3"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param(
            {"logins": (), "password": None, "secret_exists": False, "request": "r1"},
            database_rules.Target(V1, NEW, new=True, rotation_seen="r1"),
            id="first-login-is-new-and-a-request-before-it-counts-as-seen",
        ),
        pytest.param(
            {"logins": (), "password": None, "pending": database_rules.Pending(V1, OLD)},
            database_rules.Target(V1, OLD, new=True),
            id="a-first-login-on-its-way-in-is-finished-not-replaced",
        ),
        pytest.param({}, database_rules.Target(V1, OLD, new=False), id="in-place-nothing-new"),
        pytest.param(
            {"due": True, "request": "r1"},
            database_rules.Target(V2, NEW, new=True, rotation=True, rotation_seen="r1"),
            id="a-due-rotation-makes-the-next-login",
        ),
        pytest.param(
            {"due": True, "logins": (V1, V2)},
            database_rules.Target(V2, OLD, new=False),
            id="no-rotation-while-an-older-login-is-still-kept",
        ),
        pytest.param(
            {"pending": database_rules.Pending(V2, NEW, "r1"), "request": "r2", "due": True},
            database_rules.Target(V2, NEW, new=True, rotation=True, rotation_seen="r1"),
            id="a-rotation-cut-short-by-a-crash-is-finished-with-its-own-password",
        ),
        pytest.param(
            {"logins": (V1, V2), "pending": database_rules.Pending(V2, NEW, "r1"), "password": OLD},
            database_rules.Target(V2, NEW, new=True, rotation=True, rotation_seen="r1"),
            id="a-rotation-cut-short-after-the-server-is-finished-too",
        ),
        pytest.param(
            {"logins": (V1, V2), "password": NEW, "pending": database_rules.Pending(V2, NEW, "r1")},
            database_rules.Target(V2, NEW, new=False),
            id="a-committed-rotation-leaves-only-the-rotation-secret-to-delete",
        ),
        pytest.param(
            {"pending": database_rules.Pending(V2, "")},
            database_rules.Target(V1, OLD, new=False),
            id="an-empty-rotation-secret-holds-nothing-live",
        ),
        pytest.param(
            {"logins": (V1, V2), "password": OLD, "pending": database_rules.Pending(V1, "x")},
            database_rules.Target(V2, OLD, new=False),
            id="a-stale-rotation-secret-of-an-older-generation-is-ignored",
        ),
        pytest.param(
            {"pending": database_rules.Pending("bank_ledger_v7", NEW)},
            database_rules.Target(V1, OLD, new=False),
            id="a-rotation-secret-naming-another-databases-login-is-ignored",
        ),
        pytest.param(
            {"password": None},
            database_rules.Target(V2, NEW, new=True, rotation=True),
            id="a-secret-that-lost-its-password-rotates-so-running-pods-keep-theirs",
        ),
        pytest.param(
            {"password": None, "logins": (V1, V2)},
            database_rules.Target(V2, NEW, new=True),
            id="while-an-older-login-is-kept-a-lost-password-is-replaced-on-the-current-login",
        ),
        pytest.param(
            {"logins": (V1, V3)},
            database_rules.Target(V3, OLD, new=False),
            id="the-current-login-is-the-newest-marked-generation",
        ),
    ],
)
def test_the_target_is_a_derived_login_and_finishes_what_is_on_its_way_in_first(
    kwargs: dict[str, object], expected: database_rules.Target
) -> None:
    """Nothing but the password is read from the Secret: the login is always one of this Database's generations,
    the newest of those marked on the server."""
    arguments: dict[str, object] = {
        "namespace": "shop",
        "name": "orders",
        "logins": (V1,),
        "password": OLD,
        "pending": None,
        "due": False,
        "request": None,
        **kwargs,
    }

    assert database_rules.target(new_password=lambda: NEW, **arguments) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("crash_after", [0, 1, 2, 3], ids=["rotation-secret", "server", "credentials", "cleanup"])
def test_a_crash_after_any_write_of_a_rotation_never_loses_a_password_the_server_accepts(crash_after: int) -> None:
    """The writes of a rotation, in the edge's order: 0 the rotation Secret, 1 the server, 2 the credentials Secret,
    3 the rotation Secret deleted. After a crash at any of them, a password the server accepts for the new login is
    in one of the two Secrets, and the restarted reconcile finishes the rotation with that same password."""
    passwords = iter(["P" * 40, "Q" * 40])
    password, server = OLD, {V1: OLD}

    def plan(password: str, pending: database_rules.Pending | None) -> database_rules.Target:
        return database_rules.target(
            namespace="shop",
            name="orders",
            logins=tuple(sorted(server, key=database_rules.generation_of)),
            password=password,
            pending=pending,
            due=True,
            request=None,
            new_password=lambda: next(passwords),
        )

    target = plan(password, None)
    assert (target.user, target.new, target.rotation) == (V2, True, True)

    stored: database_rules.Pending | None = target.pending
    if crash_after >= 1:
        server[target.user] = target.password
    if crash_after >= 2:
        password = target.password
    if crash_after >= 3:
        stored = None

    if V2 in server:
        kept = {password} | ({stored.password} if stored is not None else set())
        assert server[V2] in kept
    resumed = plan(password, stored)
    assert (resumed.user, resumed.password) == (V2, target.password)


@pytest.mark.parametrize(
    ("readers", "now", "drop", "waiting", "opted_out"),
    [
        pytest.param([], NOW, True, (), (), id="no-readers-drop-at-once"),
        pytest.param(
            [database_rules.Reader("Deployment", "api", rolled=True, opted_out=False)],
            NOW,
            True,
            (),
            (),
            id="all-rolled",
        ),
        pytest.param(
            [database_rules.Reader("Deployment", "api", rolled=False, opted_out=False)],
            NOW,
            False,
            ("deployment/api",),
            (),
            id="a-reader-still-rolling-is-waited-for",
        ),
        pytest.param(
            [database_rules.Reader("Deployment", "legacy", rolled=False, opted_out=True)],
            NOW,
            False,
            ("deployment/legacy",),
            ("deployment/legacy",),
            id="an-opted-out-reader-is-waited-for-and-named",
        ),
        pytest.param(
            [database_rules.Reader("Deployment", "legacy", rolled=False, opted_out=True)],
            NOW + datetime.timedelta(hours=1),
            True,
            ("deployment/legacy",),
            ("deployment/legacy",),
            id="until-the-grace-period-ends-exactly",
        ),
        pytest.param(
            [database_rules.Reader("Deployment", "legacy", rolled=True, opted_out=True)],
            NOW,
            True,
            (),
            (),
            id="an-opted-out-reader-restarted-by-its-owner-counts-as-rolled",
        ),
    ],
)
def test_the_previous_login_is_dropped_once_readers_have_rolled_or_the_grace_period_ends(
    readers: list[database_rules.Reader],
    now: datetime.datetime,
    drop: bool,
    waiting: tuple[str, ...],
    opted_out: tuple[str, ...],
) -> None:
    plan = database_rules.retirement(readers, rotated_at=NOW, grace=datetime.timedelta(hours=1), now=now)

    assert (plan.drop, plan.waiting, tuple(r.name for r in plan.opted_out)) == (drop, waiting, opted_out)
    assert plan.drop_at == NOW + datetime.timedelta(hours=1)


def test_the_status_names_the_readers_that_opted_out_and_when_the_old_login_goes() -> None:
    readers = [
        database_rules.Reader("Deployment", "api", rolled=False, opted_out=False),
        database_rules.Reader("Deployment", "legacy", rolled=False, opted_out=True),
    ]
    plan = database_rules.retirement(readers, rotated_at=NOW, grace=datetime.timedelta(hours=1), now=NOW)

    message = database_rules.retirement_message(V1, plan)

    assert message == (
        "rotation: shop_orders_v1 kept until deployment/api, deployment/legacy have rolled, at the latest "
        '2026-11-26T13:00:00Z; not rolled automatically (auto-rollout "false"), they lose shop_orders_v1 then unless '
        "restarted: deployment/legacy"
    )
    assert "2026-11-26T13:00:00Z" in database_rules.opted_out_warning("orders-credentials", V1, plan.drop_at)


def test_the_rotation_secret_name_is_unambiguous_and_fits() -> None:
    assert database_rules.rotation_secret_name("shop", "orders") == "database-rotation.shop.orders"
    assert database_rules.rotation_secret_name("a-b", "c") != database_rules.rotation_secret_name("a", "b-c")
    long = database_rules.rotation_secret_name("n" * 63, "d" * 241)
    assert len(long) <= 253
    assert long != database_rules.rotation_secret_name("n" * 63, "e" * 241)


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

    role = database_rules.owner_role(namespace, name)

    assert len(role.encode()) <= database_rules.MAX_IDENTIFIER == 63
    assert (role == full) is kept
    if not kept:
        assert len(role) == 63
        assert role.startswith(full[:35] + "__")
        assert role != database_rules.owner_role(namespace, name + "x")  # the digest keeps cut names apart


@pytest.mark.parametrize(
    ("base", "kept"),
    [
        pytest.param("n" * 30 + "_" + "d" * 29, True, id="60-bytes-and-_v1-make-63"),
        pytest.param("n" * 30 + "_" + "d" * 30, False, id="61-bytes-and-_v1-make-64"),
    ],
)
def test_a_login_role_of_exactly_63_bytes_is_kept_and_its_generation_always_survives(base: str, kept: bool) -> None:
    namespace, name = base.split("_")

    login = database_rules.login_role(namespace, name, 1)

    assert len(login) <= 63
    assert (login == base + "_v1") is kept
    assert login.endswith("_v1")
    assert database_rules.generation_of(login) == 1


def legacy_cut(full: str) -> str:
    """Today's cut before markers: ``name[:54]_<hash8>``."""
    return f"{full[:54]}_{hashlib.sha256(full.encode()).hexdigest()[:8]}"


def test_a_cut_name_is_never_a_name_that_fits_as_the_old_cut_could_be() -> None:
    """The old cut ``namespace[:54]_<hash8>`` of a long name was also the name that fits of the Database named by
    the digest in the namespace that is the prefix: two tenants shared one role and database."""
    prefix = "p" * 54
    victim = (prefix + "-long", "orders-database")
    digest = hashlib.sha256(f"{victim[0]}_{victim[1]}".encode()).hexdigest()[:8]
    attacker = (prefix, digest)

    assert database_rules.legacy_owner_role(*victim) == database_rules.legacy_owner_role(*attacker), (
        "the attack on the old names"
    )
    assert database_rules.owner_role(*victim) != database_rules.owner_role(*attacker)
    assert "__" in database_rules.owner_role(*victim)
    assert "__" not in database_rules.owner_role(*attacker)


@pytest.mark.parametrize(
    ("namespace", "name"),
    [
        pytest.param("shop", "orders", id="short"),
        pytest.param("n" * 31, "d" * 31, id="63-bytes"),
        pytest.param("n" * 63, "d" * 241, id="longest"),
    ],
)
def test_names_that_fit_are_what_they_were_before_markers_so_existing_roles_stay_theirs(
    namespace: str, name: str
) -> None:
    full = f"{namespace}_{name}"
    if len(full) <= 63:
        assert database_rules.owner_role(namespace, name) == database_rules.legacy_owner_role(namespace, name) == full
    else:
        assert database_rules.legacy_owner_role(namespace, name) == legacy_cut(full)
        assert database_rules.owner_role(namespace, name) != legacy_cut(full)


def test_no_two_databases_share_a_name_on_the_server() -> None:
    """Owner roles and login generations of many Databases whose names cut alike, and of names that fit: all
    distinct, all within 63 bytes, and a login is recognized as its own Database's only."""
    databases = [("p" * 54, "x" * k) for k in range(1, 12)] + [("p" * 54 + "-" + "q" * 8, f"d{k}") for k in range(9)]
    databases += [("shop", "orders"), ("shop", "orders-v1"), ("shop-orders", "v1"), ("a" * 63, "b" * 200)]
    names = [database_rules.owner_role(*db) for db in databases]
    names += [database_rules.login_role(*db, generation) for db in databases for generation in (1, 2, 10, 12345)]

    assert len(set(names)) == len(names)
    assert max(len(n.encode()) for n in names) <= 63
    for namespace, name in databases:
        login = database_rules.login_role(namespace, name, 3)
        assert [db for db in databases if database_rules.is_login_of(login, *db)] == [(namespace, name)]


def test_a_schedule_due_exactly_now_rotates() -> None:
    on_time = database_rules.rotation(
        rotate_every="720h", rotate_request=None, seen_request=None, rotated_at=NOW - 720 * HOUR, now=NOW
    )
    a_second_early = database_rules.rotation(
        rotate_every="720h",
        rotate_request=None,
        seen_request=None,
        rotated_at=NOW - 720 * HOUR + datetime.timedelta(seconds=1),
        now=NOW,
    )

    assert (on_time.due, on_time.reason) == (True, "scheduled")
    assert (a_second_early.due, a_second_early.next_check) == (False, datetime.timedelta(seconds=1))


# ---- which roles on the server are the Database's --------------------------------------------------------------

UID = "0b9f-uid"
MINE = database_rules.marker("shop", "orders", UID)
OWNER = "shop_orders"


def owner_role(comment: str | None = MINE, **extra: object) -> database_rules.Role:
    return database_rules.Role(OWNER, login=False, privileged=False, comment=comment, **extra)  # type: ignore[arg-type]


def login(name: str, comment: str | None = MINE, **extra: object) -> database_rules.Role:
    fields: dict[str, object] = {"login": True, "privileged": False, "comment": comment, "member_of": (OWNER,)}
    return database_rules.Role(name, **{**fields, **extra})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "legacy", "expected"),
    [
        pytest.param(
            database_rules.ServerState(None, None), False, database_rules.Claim(create=True), id="nothing-yet"
        ),
        pytest.param(
            database_rules.ServerState(owner_role(), OWNER, (login(V1), login(V2))),
            False,
            database_rules.Claim(logins=(V1, V2)),
            id="marked-owner-and-logins",
        ),
        pytest.param(
            database_rules.ServerState(owner_role(), OWNER, (login(V2), login("shop_orders_v10"), login(V1))),
            False,
            database_rules.Claim(logins=(V1, V2, "shop_orders_v10")),
            id="generations-in-order",
        ),
        pytest.param(
            database_rules.ServerState(
                owner_role(),
                OWNER,
                (
                    login(V1),
                    login("dba", comment=None),
                    login(V2, comment=database_rules.marker("bank", "ledger", "x")),
                    login("shop_orders_v3", privileged=True),
                    login("postgres"),
                ),
            ),
            False,
            database_rules.Claim(logins=(V1,)),
            id="members-that-are-not-its-marked-logins-are-not-its-own",
        ),
        pytest.param(
            database_rules.ServerState(owner_role(comment=None), OWNER, (login(V1, comment=None),)),
            True,
            database_rules.Claim(mark=(OWNER, V1), logins=(V1,)),
            id="made-before-markers-and-the-secret-is-its-own-marked-now",
        ),
    ],
)
def test_a_database_claims_only_the_roles_marked_or_provably_made_for_it(
    state: database_rules.ServerState, legacy: bool, expected: database_rules.Claim
) -> None:
    found = database_rules.claim(
        state, namespace="shop", name="orders", uid=UID, server="default", admin="postgres", secret_made_before=legacy
    )

    assert found == expected


@pytest.mark.parametrize(
    ("state", "legacy", "says"),
    [
        pytest.param(
            database_rules.ServerState(None, "dba"), True, "database shop_orders exists", id="a-database-of-its-name"
        ),
        pytest.param(
            database_rules.ServerState(owner_role(comment=None), OWNER),
            False,
            "was not made for this Database",
            id="unmarked",
        ),
        pytest.param(
            database_rules.ServerState(owner_role(comment="reports team"), OWNER),
            True,
            "not made",
            id="someone-elses-comment",
        ),
        pytest.param(
            database_rules.ServerState(owner_role(comment=database_rules.marker("shop", "orders", "older")), OWNER),
            True,
            "made for an earlier Database shop/orders",
            id="an-earlier-database-of-the-same-name",
        ),
        pytest.param(
            database_rules.ServerState(owner_role(comment=database_rules.marker("bank", "ledger", "x")), OWNER),
            True,
            "made for another Database",
            id="another-databases-marker",
        ),
        pytest.param(
            database_rules.ServerState(database_rules.Role(OWNER, login=True, privileged=False, comment=MINE), OWNER),
            False,
            "is not an owner role",
            id="a-login-role",
        ),
        pytest.param(
            database_rules.ServerState(database_rules.Role(OWNER, login=False, privileged=True, comment=MINE), OWNER),
            False,
            "is not an owner role",
            id="a-privileged-role-even-marked",
        ),
        pytest.param(
            database_rules.ServerState(owner_role(), "dba"),
            False,
            "owned by another role",
            id="marked-but-the-database-is-not",
        ),
        pytest.param(
            database_rules.ServerState(
                owner_role(comment=None), OWNER, (login(V1, comment=None), login("dba", comment=None))
            ),
            True,
            "not made",
            id="before-markers-but-a-member-that-is-not-its-login",
        ),
        pytest.param(
            database_rules.ServerState(
                owner_role(comment=None), OWNER, (login(V1, comment=None, member_of=(OWNER, "x")),)
            ),
            True,
            "not made",
            id="before-markers-but-a-login-in-another-role",
        ),
        pytest.param(
            database_rules.ServerState(owner_role(comment=None, member_of=("pg_read_all_data",)), OWNER),
            True,
            "not made",
            id="before-markers-but-the-owner-is-in-another-role",
        ),
        pytest.param(
            database_rules.ServerState(owner_role(comment=None), "dba"),
            True,
            "not made",
            id="before-markers-another-database",
        ),
    ],
)
def test_a_role_that_is_not_the_databases_is_a_conflict_that_touches_nothing(
    state: database_rules.ServerState, legacy: bool, says: str
) -> None:
    found = database_rules.claim(
        state, namespace="shop", name="orders", uid=UID, server="default", admin="postgres", secret_made_before=legacy
    )

    assert (found.create, found.mark, found.logins) == (False, (), ())
    assert says in found.conflict


def test_the_admin_is_never_an_owner_role_even_by_name() -> None:
    state = database_rules.ServerState(database_rules.Role(OWNER, login=False, privileged=False, comment=MINE), OWNER)

    found = database_rules.claim(
        state, namespace="shop", name="orders", uid=UID, server="s", admin=OWNER, secret_made_before=True
    )

    assert found.conflict


KEY = b"k" * 32
PROOF = database_rules.secret_proof(KEY, "shop", "orders", UID)


def secret_meta(
    annotations: dict[str, str] | None = None, owner_uid: str | None = None, uid: str = "secret-uid"
) -> dict[str, object]:
    metadata: dict[str, object] = {"name": "orders-credentials", "annotations": annotations or {}, "uid": uid}
    if owner_uid is not None:
        metadata["ownerReferences"] = [{"kind": "Database", "name": "orders", "uid": owner_uid, "controller": True}]
    return {"metadata": metadata}


@pytest.mark.parametrize(
    ("secret", "legacy", "made"),
    [
        pytest.param(secret_meta(uid="recorded"), False, True, id="the-uid-its-status-records-even-without-proof"),
        pytest.param(secret_meta(owner_uid=UID, uid="replaced"), False, False, id="another-uid-and-no-proof"),
        pytest.param(secret_meta({"secrets.smll.io/made-for": PROOF}), False, True, id="the-proof"),
        pytest.param(secret_meta(), False, False, id="no-proof"),
        pytest.param(secret_meta(owner_uid=UID), False, False, id="an-owner-reference-is-no-proof"),
        pytest.param(secret_meta(owner_uid=UID), True, True, id="before-proofs-the-owner-reference-of-its-uid"),
        pytest.param(secret_meta(owner_uid="other"), True, False, id="before-proofs-another-owner"),
        pytest.param(
            secret_meta({"secrets.smll.io/made-for": database_rules.secret_proof(KEY, "shop", "orders", "older")}, UID),
            True,
            False,
            id="the-proof-of-an-earlier-database",
        ),
        pytest.param(
            secret_meta({"secrets.smll.io/made-for": database_rules.secret_proof(b"x" * 32, "shop", "orders", UID)}),
            False,
            False,
            id="a-proof-made-with-another-key",
        ),
    ],
)
def test_a_secret_is_the_databases_only_with_the_proof_the_controller_made(
    secret: dict[str, object], legacy: bool, made: bool
) -> None:
    assert database_rules.secret_made_for(secret, proof=PROOF, uid=UID, recorded_uid="recorded", legacy=legacy) is made


def test_edited_keys_names_what_differs_added_keys_included() -> None:
    desired = database_rules.credentials(user=V1, password=OLD, server=SERVER, database="shop_orders")
    found = {**desired, "POSTGRES_USER": "bank_ledger_v1", "EXTRA": "x"}

    assert database_rules.edited_keys(found, desired) == ("EXTRA", "POSTGRES_USER")
    assert database_rules.edited_keys(desired, desired) == ()


def test_a_server_may_name_the_ca_bundle_that_verify_full_checks_it_against(tmp_path: Path) -> None:
    path = tmp_path / "databases.yaml"
    path.write_text("servers: {default: {host: pg.db.svc, sslmode: verify-full, adminSecret: a, caSecret: pg-ca}}")

    [server] = load_servers(path).values()

    assert (server.sslmode, server.ca_secret) == ("verify-full", "pg-ca")


def test_a_ca_bundle_with_a_mode_that_checks_no_certificate_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "databases.yaml"
    path.write_text("servers: {default: {host: x, sslmode: require, adminSecret: a, caSecret: pg-ca}}")

    with pytest.raises(ConfigError, match="checks no certificate; use sslmode verify-full"):
        load_servers(path)


@pytest.mark.parametrize(
    ("sslmode", "hostname", "verified"),
    [("verify-full", True, True), ("verify-ca", False, True)],
)
def test_verify_modes_check_the_certificate_against_the_configured_ca(
    sslmode: str, hostname: bool, verified: bool
) -> None:
    authority = make_ca("test CA", valid_for=datetime.timedelta(days=1))
    server = database_rules.Server("s", "pg", 5432, sslmode, "a", ca_secret="ca", ca_pem=authority.cert_pem)

    context = ssl_for(server)

    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname is hostname
    assert (context.verify_mode == ssl.CERT_REQUIRED) is verified
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test CA"),),)]


@pytest.mark.parametrize(("sslmode", "expected"), [("disable", False), ("require", "require"), ("prefer", "prefer")])
def test_other_modes_are_libpqs(sslmode: str, expected: object) -> None:
    assert ssl_for(database_rules.Server("s", "pg", 5432, sslmode, "a")) == expected
