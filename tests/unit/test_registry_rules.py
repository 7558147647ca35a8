"""Per-VPC registry credentials: names, formats and the next write, by table."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest

from rules import registry as r
from rules.names import ROTATION_SEEN

HOST = "registry.example:5000"
NS = "shop"
USER = "vpc-shop"
OLD = "A" * 40
NEW = "B" * 40


def fake_verify(password: str, hashed: str) -> bool:
    return hashed == f"hash-of-{password}"


def creds(*, password: str | None = OLD, seen: str | None = None, extra: dict[str, str] | None = None) -> r.SecretState:
    data = {r.URL_KEY: HOST, r.USER_KEY: USER, **(extra or {})}
    if password is not None:
        data[r.PASSWORD_KEY] = password
    return r.SecretState(managed=True, type="Opaque", data=data, rotation_seen=seen)


def pull(password: str = OLD, *, managed: bool = True, type_: str = r.DOCKERCONFIGJSON) -> r.SecretState:
    return r.SecretState(managed, type_, {r.DOCKERCONFIGJSON_KEY: r.dockerconfigjson(HOST, USER, password)})


def contract(password: str) -> dict[str, str]:
    return {r.URL_KEY: HOST, r.USER_KEY: USER, r.PASSWORD_KEY: password}


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
    return r.next_step(observed, registry_host=HOST, verify=fake_verify, new_password=lambda: NEW)


# ---- names and formats ------------------------------------------------------------------------------------


def test_the_username_is_derived_from_the_namespace_and_maps_back() -> None:
    assert r.username("shop") == "vpc-shop"
    assert r.namespace_of("vpc-shop") == "shop"
    assert r.namespace_of("ci-pusher") is None
    assert r.namespace_of("vpc-") is None


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
        pytest.param("https://registry.example", "registry.example", id="https-without-port"),
        pytest.param("https://registry.example:443", "registry.example", id="https-default-port-is-left-out"),
        pytest.param("registry.example:443", "registry.example", id="bare-host-counts-as-https"),
        pytest.param("http://registry.example:80/", "registry.example", id="http-default-port-is-left-out"),
        pytest.param("http://registry.example:443", "registry.example:443", id="https-port-over-http-is-kept"),
        pytest.param("https://[fd00::1]:5000", "[fd00::1]:5000", id="ipv6-literal"),
    ],
)
def test_registry_url_is_the_host_docker_login_takes(url: str, host: str) -> None:
    assert r.registry_host(url) == host


def test_the_dockerconfigjson_carries_user_password_and_auth_and_is_deterministic() -> None:
    body = r.dockerconfigjson(HOST, USER, OLD)
    auth = json.loads(body)["auths"]["registry.example:5000"]

    assert auth["username"] == USER
    assert auth["password"] == OLD
    assert base64.b64decode(auth["auth"]).decode() == f"{USER}:{OLD}"
    assert body == r.dockerconfigjson(HOST, USER, OLD)


def test_the_rotation_secret_is_named_for_its_namespace_and_maps_back() -> None:
    assert r.rotation_secret_name("shop") == "registry-rotation-shop"
    assert r.namespace_of_rotation_secret("registry-rotation-shop") == "shop"
    assert r.namespace_of_rotation_secret("registry-rotation-") is None
    assert r.namespace_of_rotation_secret("smll-secrets-rollout-key") is None


def test_pending_state_reads_the_password_and_the_rotate_request_it_answers() -> None:
    secret = {
        "metadata": {"annotations": {ROTATION_SEEN: "r1"}},
        "data": {r.ROTATION_KEY: base64.b64encode(NEW.encode()).decode()},
    }

    assert r.pending_state(secret) == r.Pending(NEW, "r1")
    assert NEW not in repr(r.pending_state(secret))
    assert r.pending_state({"metadata": {}}) == r.Pending("", None)
    assert r.pending_state(None) is None


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
            "labels": r.LABELS,
            "annotations": {ROTATION_SEEN: "1"},
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
            r.StorePending(NEW, "r1"),
            id="new-vpc-password-is-stored-in-our-namespace-before-anything-else",
        ),
        pytest.param(
            replace(IN_SYNC, credentials=None, pull_secret=None, entry=None, pending=r.Pending(NEW, "r1")),
            r.SetEntry(USER, NEW),
            id="new-vpc-pending-password-goes-to-htpasswd-next",
        ),
        pytest.param(
            replace(IN_SYNC, credentials=None, pull_secret=None, entry=f"hash-of-{NEW}", pending=r.Pending(NEW, "r1")),
            r.WritePullSecret(r.dockerconfigjson(HOST, USER, NEW), replace=False),
            id="new-vpc-then-the-pull-secret",
        ),
        pytest.param(
            replace(
                IN_SYNC, credentials=None, pull_secret=pull(NEW), entry=f"hash-of-{NEW}", pending=r.Pending(NEW, "r1")
            ),
            r.CreateCredentials(contract(NEW), "r1"),
            id="new-vpc-credentials-are-born-with-exactly-their-keys",
        ),
        pytest.param(
            replace(
                IN_SYNC,
                credentials=creds(password=NEW, seen="r1"),
                pull_secret=pull(NEW),
                entry=f"hash-of-{NEW}",
                pending=r.Pending(NEW, "r1"),
            ),
            r.DeletePending(),
            id="new-vpc-then-the-pending-password-goes",
        ),
        pytest.param(
            replace(IN_SYNC, rotate="r1"),
            r.StorePending(NEW, "r1"),
            id="a-new-rotate-value-stores-a-new-password-in-our-namespace",
        ),
        pytest.param(
            replace(IN_SYNC, rotate="r1", pending=r.Pending(NEW, "r1")),
            r.SetEntry(USER, NEW, keep=f"hash-of-{OLD}"),
            id="rotation-pending-password-goes-to-htpasswd-the-old-entry-kept",
        ),
        pytest.param(
            replace(IN_SYNC, rotate="r1", pending=r.Pending(NEW, "r1"), entry=f"hash-of-{NEW}"),
            r.WritePullSecret(r.dockerconfigjson(HOST, USER, NEW), replace=False),
            id="rotation-then-the-pull-secret",
        ),
        pytest.param(
            replace(IN_SYNC, rotate="r1", pending=r.Pending(NEW, "r1"), entry=f"hash-of-{NEW}", pull_secret=pull(NEW)),
            r.UpdateCredentials({r.PASSWORD_KEY: NEW}, "r1"),
            id="rotation-then-the-commit-with-the-request-it-answers",
        ),
        pytest.param(
            replace(
                IN_SYNC,
                rotate="r1",
                credentials=creds(password=NEW, seen="r1"),
                pending=r.Pending(NEW, "r1"),
                entry=f"hash-of-{NEW}",
                pull_secret=pull(NEW),
            ),
            r.DeletePending(),
            id="rotation-then-the-pending-password-goes",
        ),
        pytest.param(
            replace(IN_SYNC, pending=r.Pending("", None)),
            r.DeletePending(),
            id="an-empty-rotation-secret-holds-nothing-live-and-goes",
        ),
        pytest.param(
            replace(IN_SYNC, credentials=creds(extra={r.LEGACY_PENDING_KEY: NEW}, seen="r0")),
            r.StorePending(NEW, "r0"),
            id="an-earlier-versions-pending-key-moves-out-of-the-users-secret-first",
        ),
        pytest.param(
            replace(
                IN_SYNC,
                credentials=creds(extra={r.LEGACY_PENDING_KEY: NEW}, seen="r0"),
                pending=r.Pending(NEW, "r0"),
                entry=f"hash-of-{NEW}",
                pull_secret=pull(NEW),
            ),
            r.UpdateCredentials({r.PASSWORD_KEY: NEW, r.LEGACY_PENDING_KEY: None}, "r0"),
            id="and-the-commit-removes-it",
        ),
        pytest.param(
            replace(IN_SYNC, credentials=creds(extra={"EXTRA": "x"})),
            r.UpdateCredentials({"EXTRA": None}),
            id="a-key-outside-the-contract-is-removed",
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
            r.WritePullSecret(r.dockerconfigjson(HOST, USER, OLD), replace=True),
            id="a-pull-secret-of-the-wrong-type-is-replaced",
        ),
        pytest.param(replace(IN_SYNC, rotate="r1", credentials=creds(seen="r1")), None, id="a-seen-rotate-value-not"),
        pytest.param(replace(IN_SYNC, credentials=creds(seen="r1")), None, id="removing-the-annotation-does-not"),
        pytest.param(
            replace(IN_SYNC, rotate="r2", pending=r.Pending(NEW, "r1"), entry=f"hash-of-{NEW}"),
            r.WritePullSecret(r.dockerconfigjson(HOST, USER, NEW), replace=False),
            id="a-rotation-under-way-finishes-before-another-starts",
        ),
        pytest.param(
            replace(IN_SYNC, credentials=creds(password=None)),
            r.StorePending(NEW, None),
            id="a-secret-stripped-of-its-password-gets-a-new-one",
        ),
        pytest.param(
            replace(
                IN_SYNC,
                credentials=r.SecretState(True, "Opaque", {r.URL_KEY: "https://old.example", r.PASSWORD_KEY: OLD}),
            ),
            r.UpdateCredentials({r.URL_KEY: HOST, r.USER_KEY: USER}),
            id="a-changed-registry-host-is-written",
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
        pytest.param(
            replace(LEFT, entry=None, pending=r.Pending(NEW, "r1")),
            r.DeletePending(),
            id="then-a-rotation-that-will-not-finish",
        ),
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
        pytest.param(
            replace(LEFT, writable=False, entry=None, pending=r.Pending(NEW, None)),
            r.DeletePending(),
            id="a-deleted-namespace-leaves-nothing-in-ours",
        ),
        pytest.param(replace(LEFT, writable=False, entry=None), None, id="and-nothing-else-is-touched"),
    ],
)
def test_a_namespace_that_leaves_the_vpc_is_cleaned_up(observed: r.Observed, expected: r.Step | None) -> None:
    assert step(observed) == expected


def test_a_full_life_converges_and_never_changes_a_password_without_a_rotation() -> None:
    """Apply each step to a model of the world until nothing is left to do; check the invariants after every write
    (a crash may come after any of them, and the next reconcile starts from what the writes left)."""
    world = replace(IN_SYNC, credentials=None, pull_secret=None, entry=None, pull_secrets_of_service_account=("x",))
    passwords = iter(["P" * 40, "Q" * 40])

    def run(observed: r.Observed) -> r.Observed:
        for _ in range(10):
            action = r.next_step(observed, registry_host=HOST, verify=fake_verify, new_password=lambda: next(passwords))
            if action is None:
                return observed
            observed = apply(observed, action)
            assert_invariants(observed)
        raise AssertionError("did not converge")

    world = run(world)
    assert world.credentials is not None
    assert world.credentials.data == contract("P" * 40)
    assert world.entry == "hash-of-" + "P" * 40
    assert world.pending is None
    assert world.pull_secrets_of_service_account == ("x", r.PULL_SECRET)
    assert run(world) == world  # a resync changes nothing

    world = run(replace(world, rotate="now"))
    assert world.credentials is not None
    assert world.credentials.data == contract("Q" * 40)
    assert world.credentials.rotation_seen == "now"
    assert world.pending is None
    assert world.entry == "hash-of-" + "Q" * 40
    assert world.pull_secret == pull("Q" * 40)

    world = run(replace(world, member=False))
    assert (world.entry, world.credentials, world.pull_secret, world.pending) == (None, None, None, None)
    assert world.pull_secrets_of_service_account == ("x",)


def assert_invariants(world: r.Observed) -> None:
    """The user's Secret has exactly its contract keys, and the password the registry accepts is never lost."""
    if world.credentials is not None:
        assert set(world.credentials.data) == set(r.CONTRACT_KEYS)
    if world.entry is not None and world.member:
        known = {world.credentials.data[r.PASSWORD_KEY]} if world.credentials is not None else set()
        known |= {world.pending.password} if world.pending is not None else set()
        assert world.entry in {f"hash-of-{password}" for password in known}, "the live password must be stored"


def apply(observed: r.Observed, action: r.Step) -> r.Observed:
    """What the edge's write does to the world, modeled."""
    credentials = observed.credentials
    match action:
        case r.StorePending(password=password, rotation_seen=seen):
            assert observed.pending is None, "a password on its way in is never overwritten"
            return replace(observed, pending=r.Pending(password, seen))
        case r.DeletePending():
            return replace(observed, pending=None)
        case r.CreateCredentials(data=data, rotation_seen=seen):
            assert credentials is None
            return replace(observed, credentials=r.SecretState(True, "Opaque", dict(data), seen))
        case r.SetEntry(password=password):
            return replace(observed, entry=f"hash-of-{password}")
        case r.RemoveEntry():
            return replace(observed, entry=None)
        case r.WritePullSecret(dockerconfigjson=config):
            return replace(
                observed, pull_secret=r.SecretState(True, r.DOCKERCONFIGJSON, {r.DOCKERCONFIGJSON_KEY: config})
            )
        case r.UpdateCredentials(changes=changes, rotation_seen=seen):
            assert credentials is not None
            data = dict(credentials.data)
            for key, value in changes.items():
                if value is None:
                    data.pop(key, None)
                else:
                    data[key] = value
            seen = seen if seen is not None else credentials.rotation_seen
            return replace(observed, credentials=replace(credentials, data=data, rotation_seen=seen))
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


def test_an_upgrade_mid_rotation_finishes_the_rotation_with_the_password_already_live() -> None:
    """An earlier version kept the pending password in the user's Secret and may already have set the htpasswd
    entry to it: that password is moved out, finished, and the Secret ends with exactly its contract keys."""
    world = replace(IN_SYNC, credentials=creds(extra={r.LEGACY_PENDING_KEY: NEW}), entry=f"hash-of-{NEW}")
    for _ in range(10):
        action = step(world)
        if action is None:
            break
        world = apply(world, action)
        if world.credentials is not None:
            assert set(world.credentials.data) <= {*r.CONTRACT_KEYS, r.LEGACY_PENDING_KEY}
    assert world.credentials is not None
    assert world.credentials.data == contract(NEW)
    assert world.pending is None
    assert world.entry == f"hash-of-{NEW}"


def test_steps_never_show_a_password_in_their_repr() -> None:
    actions: list[r.Step] = [
        r.StorePending(NEW, "x"),
        r.CreateCredentials(contract(NEW), None),
        r.SetEntry(USER, NEW),
        r.WritePullSecret(r.dockerconfigjson(HOST, USER, NEW), replace=False),
        r.UpdateCredentials({r.PASSWORD_KEY: NEW}),
    ]
    for action in actions:
        assert NEW not in repr(action)
