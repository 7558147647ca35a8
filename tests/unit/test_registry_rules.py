"""Per-VPC registry credentials: names, formats and the next write, by table."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest

from rules import registry as r

URL = "https://registry.example:5000"
NS = "shop"
USER = "vpc-shop"
OLD = "A" * 40
NEW = "B" * 40


def fake_verify(password: str, hashed: str) -> bool:
    return hashed == f"hash-of-{password}"


def creds(*, password: str | None = OLD, pending: str | None = None, seen: str | None = None) -> r.SecretState:
    data = {r.URL_KEY: URL, r.USER_KEY: USER}
    if password is not None:
        data[r.PASSWORD_KEY] = password
    if pending is not None:
        data[r.PENDING_KEY] = pending
    return r.SecretState(managed=True, type="Opaque", data=data, rotation_seen=seen)


def pull(password: str = OLD, *, managed: bool = True, type_: str = r.DOCKERCONFIGJSON) -> r.SecretState:
    return r.SecretState(managed, type_, {r.DOCKERCONFIGJSON_KEY: r.dockerconfigjson(URL, USER, password)})


IN_SYNC = r.Observed(
    namespace=NS,
    member=True,
    writable=True,
    rotate=None,
    credentials=creds(),
    pull_secret=pull(),
    pull_secrets_of_service_account=("theirs", r.PULL_SECRET),
    entry=f"hash-of-{OLD}",
)
LEFT = replace(IN_SYNC, member=False)


def step(observed: r.Observed) -> r.Step | None:
    return r.next_step(observed, registry_url=URL, verify=fake_verify, new_password=lambda: NEW)


# ---- names and formats ------------------------------------------------------------------------------------


def test_the_username_is_derived_from_the_namespace_and_maps_back() -> None:
    assert r.username("shop") == "vpc-shop"
    assert r.namespace_of("vpc-shop") == "shop"
    assert r.namespace_of("ci-pusher") is None
    assert r.namespace_of("vpc-") is None


def test_generated_passwords_are_long_alphanumeric_and_fit_bcrypt() -> None:
    passwords = {r.generate_password() for _ in range(50)}

    assert len(passwords) == 50
    for password in passwords:
        assert password.isascii()
        assert password.isalnum()
        assert 32 <= len(password.encode()) < 72


def test_a_bcrypt_hash_verifies_its_password_only() -> None:
    hashed = r.hash_password("secret", cost=4)

    assert hashed.startswith("$2")
    assert r.verify_password("secret", hashed)
    assert not r.verify_password("other", hashed)
    assert not r.verify_password("secret", "not-a-hash")


def test_the_default_bcrypt_cost_is_at_least_ten() -> None:
    assert r.BCRYPT_COST >= 10
    assert r.hash_password("x").split("$")[2] == f"{r.BCRYPT_COST:02d}"


@pytest.mark.parametrize(
    ("url", "host"),
    [
        pytest.param("registry.example", "registry.example", id="bare-host"),
        pytest.param("registry.example:5000", "registry.example:5000", id="host-and-port"),
        pytest.param("https://registry.example:5000/v2/", "registry.example:5000", id="url-with-path"),
        pytest.param("http://127.0.0.1:5000", "127.0.0.1:5000", id="http-loopback"),
    ],
)
def test_the_pull_secret_is_keyed_by_the_registry_host(url: str, host: str) -> None:
    assert r.registry_host(url) == host


def test_the_dockerconfigjson_carries_user_password_and_auth_and_is_deterministic() -> None:
    body = r.dockerconfigjson(URL, USER, OLD)
    auth = json.loads(body)["auths"]["registry.example:5000"]

    assert auth["username"] == USER
    assert auth["password"] == OLD
    assert base64.b64decode(auth["auth"]).decode() == f"{USER}:{OLD}"
    assert body == r.dockerconfigjson(URL, USER, OLD)


@pytest.mark.parametrize(
    ("text", "entries"),
    [
        pytest.param("", {}, id="empty"),
        pytest.param("a:h1\nb:h2\n", {"a": "h1", "b": "h2"}, id="two-entries"),
        pytest.param("# comment\n\n  a:h1  \nbroken\n:nouser\n", {"a": "h1"}, id="noise-is-skipped"),
        pytest.param("a:h1\na:h2\n", {"a": "h2"}, id="a-later-line-wins"),
        pytest.param("a:$2b$10$x:y\n", {"a": "$2b$10$x:y"}, id="the-hash-may-hold-colons"),
    ],
)
def test_htpasswd_parses_to_entries_keyed_by_user(text: str, entries: dict[str, str]) -> None:
    assert r.parse_htpasswd(text) == entries


def test_htpasswd_formats_sorted_and_round_trips() -> None:
    text = r.format_htpasswd({"vpc-b": "h2", "ci": "h0", "vpc-a": "h1"})

    assert text == "ci:h0\nvpc-a:h1\nvpc-b:h2\n"
    assert r.parse_htpasswd(text) == {"ci": "h0", "vpc-a": "h1", "vpc-b": "h2"}
    assert r.format_htpasswd({}) == ""


# ---- what is observed -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "member", "writable"),
    [
        pytest.param({"metadata": {"labels": {"smll.io/vpc": ""}}}, True, True, id="labeled-any-value"),
        pytest.param({"metadata": {"labels": {"smll.io/vpc": "prod"}}}, True, True, id="labeled"),
        pytest.param({"metadata": {"labels": {"other": "x"}}}, False, True, id="not-labeled"),
        pytest.param(
            {"metadata": {"labels": {"smll.io/vpc": "x"}, "deletionTimestamp": "2024-01-01T00:00:00Z"}},
            False,
            False,
            id="being-deleted",
        ),
        pytest.param(None, False, False, id="gone"),
    ],
)
def test_a_vpc_is_a_labeled_namespace_that_is_not_being_deleted(
    namespace: dict[str, object] | None, member: bool, writable: bool
) -> None:
    assert r.is_member(namespace) is member
    assert r.is_writable(namespace) is writable


def test_secret_state_decodes_values_and_reads_ownership() -> None:
    secret = {
        "metadata": {
            "labels": {r.MANAGED_BY_LABEL: r.MANAGED_BY},
            "annotations": {r.ROTATION_SEEN: "1"},
        },
        "type": "Opaque",
        "data": {r.PASSWORD_KEY: base64.b64encode(b"pw").decode(), "BAD": "%%%"},
    }

    state = r.secret_state(secret)

    assert state == r.SecretState(True, "Opaque", {r.PASSWORD_KEY: "pw", "BAD": ""}, "1")
    assert "pw" not in repr(state)
    assert r.secret_state({"metadata": {}}) == r.SecretState(False, "Opaque", {}, None)
    assert r.secret_state(None) is None


# ---- the next write ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("observed", "expected"),
    [
        pytest.param(IN_SYNC, None, id="in-sync"),
        pytest.param(
            replace(IN_SYNC, credentials=None, pull_secret=None, entry=None, rotate="r1"),
            r.CreateCredentials({r.URL_KEY: URL, r.USER_KEY: USER, r.PENDING_KEY: NEW}, "r1"),
            id="new-vpc-password-is-stored-before-anything-else",
        ),
        pytest.param(
            replace(IN_SYNC, credentials=creds(password=None, pending=NEW), pull_secret=None, entry=None),
            r.SetEntry(USER, NEW),
            id="pending-password-goes-to-htpasswd-next",
        ),
        pytest.param(
            replace(IN_SYNC, credentials=creds(password=None, pending=NEW), pull_secret=None, entry=f"hash-of-{NEW}"),
            r.WritePullSecret(r.dockerconfigjson(URL, USER, NEW), replace=False),
            id="then-the-pull-secret",
        ),
        pytest.param(
            replace(
                IN_SYNC, credentials=creds(password=None, pending=NEW), pull_secret=pull(NEW), entry=f"hash-of-{NEW}"
            ),
            r.UpdateCredentials({r.PASSWORD_KEY: NEW, r.PENDING_KEY: None}),
            id="then-the-commit",
        ),
        pytest.param(
            replace(IN_SYNC, pull_secrets_of_service_account=("theirs",)),
            r.AddToServiceAccount(),
            id="the-service-account-gets-the-pull-secret",
        ),
        pytest.param(
            replace(IN_SYNC, pull_secrets_of_service_account=None),
            None,
            id="no-service-account-yet-waits-for-it",
        ),
        pytest.param(replace(IN_SYNC, entry=None), r.SetEntry(USER, OLD), id="a-missing-entry-is-rebuilt"),
        pytest.param(
            replace(IN_SYNC, entry="hash-of-something-else"),
            r.SetEntry(USER, OLD),
            id="an-entry-that-does-not-verify-is-rebuilt-from-the-stored-password",
        ),
        pytest.param(
            replace(IN_SYNC, pull_secret=pull(type_="Opaque")),
            r.WritePullSecret(r.dockerconfigjson(URL, USER, OLD), replace=True),
            id="a-pull-secret-of-the-wrong-type-is-replaced",
        ),
        pytest.param(
            replace(IN_SYNC, rotate="r1"),
            r.BeginRotation(NEW, "r1"),
            id="a-new-rotate-value-rotates",
        ),
        pytest.param(replace(IN_SYNC, rotate="r1", credentials=creds(seen="r1")), None, id="a-seen-rotate-value-not"),
        pytest.param(replace(IN_SYNC, credentials=creds(seen="r1")), None, id="removing-the-annotation-does-not"),
        pytest.param(
            replace(IN_SYNC, rotate="r2", credentials=creds(pending=NEW, seen="r1"), entry=f"hash-of-{NEW}"),
            r.WritePullSecret(r.dockerconfigjson(URL, USER, NEW), replace=False),
            id="a-rotation-under-way-finishes-before-another-starts",
        ),
        pytest.param(
            replace(IN_SYNC, credentials=creds(password=None)),
            r.BeginRotation(NEW, None),
            id="a-secret-stripped-of-its-password-gets-a-new-one",
        ),
        pytest.param(
            replace(
                IN_SYNC,
                credentials=r.SecretState(True, "Opaque", {r.URL_KEY: "old.example", r.PASSWORD_KEY: OLD}),
            ),
            r.UpdateCredentials({r.URL_KEY: URL, r.USER_KEY: USER}),
            id="a-changed-registry-url-is-written",
        ),
        pytest.param(
            replace(IN_SYNC, credentials=replace(creds(), managed=False)),
            r.Blocked(r.not_ours(r.CREDENTIALS, NS)),
            id="a-foreign-credentials-secret-blocks",
        ),
        pytest.param(
            replace(IN_SYNC, pull_secret=pull(managed=False)),
            r.Blocked(r.not_ours(r.PULL_SECRET, NS)),
            id="a-foreign-pull-secret-blocks",
        ),
    ],
)
def test_a_vpc_namespace_converges_one_write_at_a_time(observed: r.Observed, expected: r.Step | None) -> None:
    assert step(observed) == expected


@pytest.mark.parametrize(
    ("observed", "expected"),
    [
        pytest.param(LEFT, r.RemoveEntry(USER), id="the-login-is-revoked-first"),
        pytest.param(replace(LEFT, entry=None), r.RemoveFromServiceAccount(), id="then-the-service-account"),
        pytest.param(
            replace(LEFT, entry=None, pull_secrets_of_service_account=("theirs",)),
            r.DeleteSecret(r.PULL_SECRET),
            id="then-the-pull-secret",
        ),
        pytest.param(
            replace(LEFT, entry=None, pull_secret=None, pull_secrets_of_service_account=("theirs",)),
            r.DeleteSecret(r.CREDENTIALS),
            id="then-the-credentials",
        ),
        pytest.param(
            replace(LEFT, entry=None, pull_secret=None, credentials=None, pull_secrets_of_service_account=()),
            None,
            id="done",
        ),
        pytest.param(
            replace(LEFT, entry=None, pull_secret=pull(managed=False), credentials=replace(creds(), managed=False)),
            None,
            id="secrets-not-ours-stay-and-so-does-the-reference-to-them",
        ),
        pytest.param(
            replace(LEFT, entry=None, pull_secret=None, credentials=None),
            None,
            id="a-reference-to-a-pull-secret-that-is-gone-is-left-to-the-user",
        ),
        pytest.param(
            replace(LEFT, writable=False),
            r.RemoveEntry(USER),
            id="a-deleted-namespace-loses-its-login",
        ),
        pytest.param(replace(LEFT, writable=False, entry=None), None, id="and-nothing-else-is-touched"),
    ],
)
def test_a_namespace_that_leaves_the_vpc_is_cleaned_up(observed: r.Observed, expected: r.Step | None) -> None:
    assert step(observed) == expected


def test_a_full_life_converges_and_never_changes_a_password_without_a_rotation() -> None:
    """Apply each step to a model of the world until nothing is left to do; then check the invariants."""
    world = replace(IN_SYNC, credentials=None, pull_secret=None, entry=None, pull_secrets_of_service_account=("x",))
    passwords = iter(["P" * 40, "Q" * 40])

    def run(observed: r.Observed) -> r.Observed:
        for _ in range(10):
            action = r.next_step(observed, registry_url=URL, verify=fake_verify, new_password=lambda: next(passwords))
            if action is None:
                return observed
            observed = apply(observed, action)
        raise AssertionError("did not converge")

    world = run(world)
    assert world.credentials is not None
    assert world.credentials.data[r.PASSWORD_KEY] == "P" * 40
    assert world.entry == "hash-of-" + "P" * 40
    assert world.pull_secrets_of_service_account == ("x", r.PULL_SECRET)
    assert run(world) == world  # a resync changes nothing

    world = run(replace(world, rotate="now"))
    assert world.credentials is not None
    assert world.credentials.data[r.PASSWORD_KEY] == "Q" * 40
    assert r.PENDING_KEY not in world.credentials.data
    assert world.entry == "hash-of-" + "Q" * 40
    assert world.pull_secret == pull("Q" * 40)

    world = run(replace(world, member=False))
    assert (world.entry, world.credentials, world.pull_secret) == (None, None, None)
    assert world.pull_secrets_of_service_account == ("x",)


def apply(observed: r.Observed, action: r.Step) -> r.Observed:
    """What the edge's write does to the world, modeled."""
    credentials = observed.credentials
    match action:
        case r.CreateCredentials(data=data, rotation_seen=seen):
            return replace(observed, credentials=r.SecretState(True, "Opaque", dict(data), seen))
        case r.BeginRotation(password=password, rotation_seen=seen):
            assert credentials is not None
            data = {**credentials.data, r.PENDING_KEY: password}
            return replace(observed, credentials=replace(credentials, data=data, rotation_seen=seen))
        case r.SetEntry(password=password):
            return replace(observed, entry=f"hash-of-{password}")
        case r.RemoveEntry():
            return replace(observed, entry=None)
        case r.WritePullSecret(dockerconfigjson=config):
            return replace(
                observed, pull_secret=r.SecretState(True, r.DOCKERCONFIGJSON, {r.DOCKERCONFIGJSON_KEY: config})
            )
        case r.UpdateCredentials(changes=changes):
            assert credentials is not None
            data = dict(credentials.data)
            for key, value in changes.items():
                if value is None:
                    data.pop(key, None)
                else:
                    data[key] = value
            return replace(observed, credentials=replace(credentials, data=data))
        case r.AddToServiceAccount():
            names = observed.pull_secrets_of_service_account or ()
            return replace(observed, pull_secrets_of_service_account=(*names, r.PULL_SECRET))
        case r.RemoveFromServiceAccount():
            names = observed.pull_secrets_of_service_account or ()
            return replace(observed, pull_secrets_of_service_account=tuple(n for n in names if n != r.PULL_SECRET))
        case r.DeleteSecret(name=name):
            if name == r.CREDENTIALS:
                return replace(observed, credentials=None)
            return replace(observed, pull_secret=None)
    raise AssertionError(f"unexpected {action!r}")


def test_steps_never_show_a_password_in_their_repr() -> None:
    actions: list[r.Step] = [
        r.CreateCredentials({r.PENDING_KEY: NEW}, None),
        r.BeginRotation(NEW, "x"),
        r.SetEntry(USER, NEW),
        r.WritePullSecret(r.dockerconfigjson(URL, USER, NEW), replace=False),
        r.UpdateCredentials({r.PASSWORD_KEY: NEW}),
    ]
    for action in actions:
        assert NEW not in repr(action)
