"""The reference finder where mutation testing found it untested (docs/mutation.md): optional references, half-made
ones, objects read from a list (no kind of their own) and malformed specs."""

from __future__ import annotations

import pytest

from rules.references import How, Use, Via, secret_uses, uses_in
from tests.factories import JsonObject, container, pod_spec, workload


def pod(spec: JsonObject, **metadata: JsonObject) -> JsonObject:
    return {"kind": "Pod", "metadata": {"name": "p", **metadata}, "spec": spec}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            pod_spec(container(envFrom=[{"secretRef": {"name": "s", "optional": True}}])),
            [Use("s", How(Via.ENV_FROM), None, True)],
            id="an-optional-envfrom-is-optional",
        ),
        pytest.param(
            pod_spec(container(envFrom=[{"secretRef": {"name": "s", "optional": False}}])),
            [Use("s", How(Via.ENV_FROM), None, False)],
            id="an-envfrom-that-says-optional-false-is-required",
        ),
        pytest.param(
            pod_spec(container(), volumes=[{"name": "v", "secret": {"secretName": "s", "optional": True}}]),
            [Use("s", How(Via.VOLUME, "v"), None, True)],
            id="an-optional-volume-is-optional",
        ),
        pytest.param(
            pod_spec(container(), volumes=[{"name": "v", "secret": {"secretName": "s", "optional": False}}]),
            [Use("s", How(Via.VOLUME, "v"), None, False)],
            id="a-volume-that-says-optional-false-is-required",
        ),
        pytest.param(
            pod_spec(container(env=[{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s"}}}])),
            [],
            id="a-secretkeyref-without-a-key-names-nothing",
        ),
        pytest.param(pod_spec(container(), imagePullSecrets=[{"name": 5}]), [], id="a-pull-secret-named-by-a-number"),
        pytest.param("nonsense", [], id="a-spec-that-is-not-an-object"),
    ],
)
def test_what_each_reference_asks_for(spec: JsonObject, expected: list[Use]) -> None:
    assert list(secret_uses(pod(spec))) == expected


def test_a_workload_read_from_a_list_has_no_kind_and_is_read_by_the_kind_given() -> None:
    found = workload(spec=pod_spec(container(envFrom=[{"secretRef": {"name": "s"}}])))
    del found["kind"]

    assert secret_uses(found, "Deployment") == (Use("s", How(Via.ENV_FROM)),)


def test_an_object_without_a_pod_template_has_only_its_link_annotations() -> None:
    service = {"kind": "Service", "metadata": {"annotations": {"env.secrets.smll.io/A": "s/K"}}, "spec": {}}

    assert secret_uses(service) == (Use("s", How(Via.LINK, "A"), frozenset({"K"})),)


def test_no_template_no_uses() -> None:
    assert uses_in(None, {}, {}) == ()
