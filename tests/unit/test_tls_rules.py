"""Self-managed TLS decisions, with the time given: when to renew, what the Secret holds next, which caBundle."""

from __future__ import annotations

import base64
import dataclasses
import datetime
from collections.abc import Callable

import pytest
from cryptography import x509

from rules.certs import make_ca, make_leaf
from rules.tls import (
    Material,
    Policy,
    Step,
    SubjectNames,
    fingerprint,
    needs_renewal,
    next_step,
    signed_by,
    take_step,
    trusted_bundle,
    trusts,
    with_ca_bundle,
)

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
YEAR = datetime.timedelta(days=365)
MONTH = YEAR / 12
POLICY = Policy(ca_validity=5 * YEAR, serving_validity=YEAR)
NAMES = SubjectNames.for_service("hook", "system")


def issue(now: datetime.datetime = T0) -> Material:
    return take_step(Step.ISSUE, None, now=now, policy=POLICY, names=NAMES)


def rotated(now: datetime.datetime) -> Material:
    """Issued at T0, the CA rotated at ``now``; the serving certificate still the one the old CA signed."""
    return take_step(Step.ROTATE_CA, issue(), now=now, policy=POLICY, names=NAMES)


FRESH = issue()


# -- when a certificate needs renewing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("validity", "age", "renew"),
    [
        (YEAR, datetime.timedelta(0), False),
        (YEAR, 7 * MONTH, False),
        (YEAR, 8 * MONTH + 2 * DAY, True),  # less than a third of the year left
        (YEAR, YEAR + DAY, True),  # expired
        (5 * YEAR, 3 * YEAR, False),
        (5 * YEAR, 3 * YEAR + 5 * MONTH, True),
        (datetime.timedelta(seconds=60), datetime.timedelta(seconds=30), False),
        (datetime.timedelta(seconds=60), datetime.timedelta(seconds=45), True),
    ],
    ids=[
        "new",
        "seven-months-into-a-year",
        "eight-months-into-a-year",
        "expired",
        "three-years-into-five",
        "three-and-a-half-years-into-five",
        "half-of-a-minute",
        "three-quarters-of-a-minute",
    ],
)
def test_a_certificate_is_renewed_when_less_than_a_third_of_its_life_is_left(
    validity: datetime.timedelta, age: datetime.timedelta, renew: bool
) -> None:
    ca = make_ca("ca", valid_for=validity, now=T0)
    assert needs_renewal(ca.certificate, T0 + age, renew_fraction=1 / 3) is renew


# -- what the Secret needs next -------------------------------------------------------------------------------


def with_foreign_key(material: Material, *, ca: bool = False) -> Material:
    other = make_ca("other", valid_for=YEAR, now=T0).key_pem
    if ca:
        return dataclasses.replace(material, ca=dataclasses.replace(material.ca, key_pem=other))
    return dataclasses.replace(material, serving=dataclasses.replace(material.serving, key_pem=other))


def with_expired_old_ca(material: Material) -> Material:
    old = make_ca("old", valid_for=YEAR, now=T0 - 2 * YEAR).certificate
    return dataclasses.replace(material, bundle=(*material.bundle, old))


Case = tuple[Callable[[], Material | None], datetime.datetime, bool, SubjectNames, Step]
CASES: dict[str, Case] = {
    "nothing-yet": (lambda: None, T0, False, NAMES, Step.ISSUE),
    "fresh": (lambda: FRESH, T0 + DAY, True, NAMES, Step.KEEP),
    "fresh-not-yet-published": (lambda: FRESH, T0 + DAY, False, NAMES, Step.KEEP),
    "serving-in-its-last-third": (lambda: FRESH, T0 + 9 * MONTH, True, NAMES, Step.REISSUE_SERVING),
    "serving-expired": (lambda: FRESH, T0 + 13 * MONTH, True, NAMES, Step.REISSUE_SERVING),
    "another-service-name": (
        lambda: FRESH,
        T0 + DAY,
        True,
        SubjectNames.for_service("renamed", "system"),
        Step.REISSUE_SERVING,
    ),
    "an-extra-ip": (
        lambda: FRESH,
        T0 + DAY,
        True,
        SubjectNames.for_service("hook", "system", extra_ips=["127.0.0.1"]),
        Step.REISSUE_SERVING,
    ),
    "serving-key-does-not-match": (lambda: with_foreign_key(FRESH), T0 + DAY, True, NAMES, Step.REISSUE_SERVING),
    "ca-key-does-not-match": (lambda: with_foreign_key(FRESH, ca=True), T0 + DAY, True, NAMES, Step.ISSUE),
    "ca-in-its-last-third": (lambda: FRESH, T0 + 3 * YEAR + 6 * MONTH, True, NAMES, Step.ROTATE_CA),
    "ca-expired": (lambda: FRESH, T0 + 5 * YEAR + DAY, True, NAMES, Step.ISSUE),
    "new-ca-not-yet-published": (lambda: rotated(T0 + 6 * MONTH), T0 + 6 * MONTH, False, NAMES, Step.AWAIT_BUNDLE),
    "new-ca-published": (lambda: rotated(T0 + 6 * MONTH), T0 + 6 * MONTH, True, NAMES, Step.REISSUE_SERVING),
    "new-ca-unpublished-but-serving-expired": (
        lambda: rotated(T0 + 6 * MONTH),
        T0 + 13 * MONTH,
        False,
        NAMES,
        Step.REISSUE_SERVING,
    ),
    "expired-old-ca-in-the-bundle": (lambda: with_expired_old_ca(FRESH), T0 + DAY, True, NAMES, Step.PRUNE_BUNDLE),
}


@pytest.mark.parametrize(("material", "now", "published", "names", "step"), CASES.values(), ids=CASES.keys())
def test_the_next_step_for_the_secret(
    material: Callable[[], Material | None],
    now: datetime.datetime,
    published: bool,
    names: SubjectNames,
    step: Step,
) -> None:
    assert next_step(material(), now=now, policy=POLICY, names=names, published=published) is step


def test_a_rotated_ca_goes_first_and_the_old_one_stays_while_the_serving_certificate_is_kept() -> None:
    before = issue()
    after = take_step(Step.ROTATE_CA, before, now=T0 + 3 * YEAR + 6 * MONTH, policy=POLICY, names=NAMES)

    assert [fingerprint(c) for c in after.bundle] == [
        fingerprint(after.ca.certificate),
        fingerprint(before.ca.certificate),
    ]
    assert after.serving == before.serving
    assert signed_by(after.serving.certificate, after.bundle[1])


def test_a_reissued_serving_certificate_is_signed_by_the_current_ca_and_never_outlives_it() -> None:
    # A CA with half a year left and a policy of a year: the certificate ends with the CA.
    short_ca = dataclasses.replace(FRESH, ca=make_ca("short", valid_for=YEAR, now=T0 - 6 * MONTH))
    short_ca = dataclasses.replace(short_ca, bundle=(short_ca.ca.certificate,))

    after = take_step(Step.REISSUE_SERVING, short_ca, now=T0, policy=POLICY, names=NAMES)

    assert signed_by(after.serving.certificate, short_ca.ca.certificate)
    assert after.serving.not_after <= short_ca.ca.not_after
    assert NAMES.of(after.serving.certificate)


def test_the_serving_certificate_names_the_service_as_the_api_server_calls_it() -> None:
    sans = FRESH.serving.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "hook",
        "hook.system",
        "hook.system.svc",
        "hook.system.svc.cluster.local",
    ]


def test_a_new_ca_after_a_broken_one_keeps_the_unexpired_cas_in_the_bundle() -> None:
    broken = with_foreign_key(FRESH, ca=True)
    after = take_step(Step.ISSUE, broken, now=T0 + DAY, policy=POLICY, names=NAMES)
    assert [fingerprint(c) for c in after.bundle] == [
        fingerprint(after.ca.certificate),
        fingerprint(FRESH.ca.certificate),
    ]


def test_trusted_bundle_puts_the_signing_ca_first_and_drops_expired_and_repeated_ones() -> None:
    signing, kept = FRESH.ca.certificate, make_ca("kept", valid_for=YEAR, now=T0).certificate
    gone = make_ca("gone", valid_for=DAY, now=T0 - YEAR).certificate

    bundle = trusted_bundle(signing, [kept, gone, signing, kept], T0)

    assert [fingerprint(c) for c in bundle] == [fingerprint(signing), fingerprint(kept)]


def test_over_twelve_years_of_monthly_checks_the_served_certificate_is_always_valid_and_trusted() -> None:
    """The whole life: every check applies one step, and the configurations publish what the Secret says."""
    material: Material | None = None
    published_bundle: tuple[x509.Certificate, ...] = ()
    now, steps = T0, []
    while now < T0 + 12 * YEAR:
        for _ in range(3):  # a few checks in a row, as the reconcile loop retries until nothing changes
            published = material is not None and material.ca.certificate in published_bundle
            step = next_step(material, now=now, policy=POLICY, names=NAMES, published=published)
            steps.append(step)
            material = take_step(step, material, now=now, policy=POLICY, names=NAMES)
            published_bundle = material.bundle
        assert material is not None
        serving = material.serving.certificate
        assert serving.not_valid_before_utc <= now < serving.not_valid_after_utc
        assert any(signed_by(serving, ca) for ca in published_bundle)
        assert all(now < ca.not_valid_after_utc for ca in material.bundle)
        now += MONTH
    assert Step.ROTATE_CA in steps
    assert steps.count(Step.ISSUE) == 1


# -- the webhook configurations -------------------------------------------------------------------------------


def configuration(*bundles: str | None) -> dict[str, object]:
    hooks = []
    for index, bundle in enumerate(bundles):
        client_config: dict[str, str] = {"url": "https://127.0.0.1/x"}
        if bundle is not None:
            client_config["caBundle"] = bundle
        hooks.append({"name": f"hook{index}.smll.io", "clientConfig": client_config})
    return {"metadata": {"name": "smll-secrets", "resourceVersion": "7"}, "webhooks": hooks}


def test_every_webhook_entry_gets_the_bundle_and_nothing_else_changes() -> None:
    before = configuration(None, "b2xk")

    after = with_ca_bundle(before, FRESH.ca_bundle)

    assert after is not None
    assert [hook["clientConfig"]["caBundle"] for hook in after["webhooks"]] == [FRESH.ca_bundle] * 2
    assert [hook["clientConfig"]["url"] for hook in after["webhooks"]] == ["https://127.0.0.1/x"] * 2
    assert after["metadata"] == before["metadata"]  # the resourceVersion makes the update conditional
    assert "caBundle" not in before["webhooks"][0]["clientConfig"]  # type: ignore[index]


def test_a_configuration_that_carries_the_bundle_needs_no_update() -> None:
    assert with_ca_bundle(configuration(FRESH.ca_bundle, FRESH.ca_bundle), FRESH.ca_bundle) is None


@pytest.mark.parametrize(
    ("bundles", "trusted"),
    [
        ((FRESH.ca_bundle, FRESH.ca_bundle), True),
        ((FRESH.ca_bundle, None), False),
        ((FRESH.ca_bundle, base64.b64encode(b"not a certificate").decode()), False),
        ((base64.b64encode(FRESH.bundle_pem + make_ca("x", valid_for=DAY).cert_pem).decode(),), True),
    ],
    ids=["every-webhook", "one-webhook-without", "one-webhook-with-garbage", "among-others"],
)
def test_a_configuration_trusts_a_ca_when_every_webhook_carries_it(
    bundles: tuple[str | None, ...], trusted: bool
) -> None:
    assert trusts(configuration(*bundles), FRESH.ca.certificate) is trusted


def api_service(bundle: str | None) -> dict[str, object]:
    spec: dict[str, object] = {"group": "secrets.smll.io", "service": {"name": "smll-secrets-webhook"}}
    if bundle is not None:
        spec["caBundle"] = bundle
    return {
        "kind": "APIService",
        "metadata": {"name": "v1alpha1.secrets.smll.io", "resourceVersion": "3"},
        "spec": spec,
    }


@pytest.mark.parametrize(("bundle", "trusted"), [(None, False), ("b2xk", False), (FRESH.ca_bundle, True)])
def test_the_write_only_api_s_apiservice_keeps_its_bundle_in_spec(bundle: str | None, trusted: bool) -> None:
    before = api_service(bundle)
    assert trusts(before, FRESH.ca.certificate) is trusted
    after = with_ca_bundle(before, FRESH.ca_bundle)
    if trusted:
        assert after is None
        return
    assert after is not None
    assert after["spec"]["caBundle"] == FRESH.ca_bundle
    assert after["spec"]["service"] == {"name": "smll-secrets-webhook"}
    assert after["metadata"] == before["metadata"]
    assert before["spec"].get("caBundle") == bundle, "the object read is not changed"  # type: ignore[attr-defined]


# -- the Secret -----------------------------------------------------------------------------------------------


def test_material_survives_the_round_trip_through_the_secret() -> None:
    material = rotated(T0 + 6 * MONTH)

    again = Material.from_secret_data(material.secret_data())

    assert (again.ca, again.serving) == (material.ca, material.serving)
    assert [fingerprint(c) for c in again.bundle] == [fingerprint(c) for c in material.bundle]
    assert set(material.secret_data()) == {"tls.crt", "tls.key", "ca.crt", "ca.key"}


@pytest.mark.parametrize(
    "data",
    [
        {},
        {**FRESH.secret_data(), "ca.key": ""},
        {**FRESH.secret_data(), "tls.crt": base64.b64encode(b"garbage").decode()},
        {**FRESH.secret_data(), "ca.crt": "%%%"},
    ],
    ids=["empty", "no-ca-key", "garbage-certificate", "not-base64"],
)
def test_an_incomplete_or_unreadable_secret_is_refused(data: dict[str, str]) -> None:
    with pytest.raises((KeyError, ValueError, TypeError)):
        Material.from_secret_data(data)


def test_issued_material_uses_the_given_time() -> None:
    assert FRESH.ca.certificate.not_valid_after_utc == T0 + 5 * YEAR
    assert FRESH.serving.not_after == T0 + YEAR
    leaf = make_leaf(FRESH.ca, "x", valid_for=DAY, now=T0)
    assert leaf.certificate.not_valid_before_utc < T0
