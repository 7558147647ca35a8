"""The reference finder, over every reference kind and every container kind."""

from __future__ import annotations

import pytest

from rules.references import How, Use, Via, secret_uses
from tests.factories import JsonObject, container, pod_spec, workload

ENV_REF = {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "stripe", "key": "STRIPE_SECRET_KEY"}}}
OPTIONAL_ENV_REF = {
    "name": "OPT",
    "valueFrom": {"secretKeyRef": {"name": "stripe", "key": "MAYBE", "optional": True}},
}
ENV_FROM = {"secretRef": {"name": "bulk"}}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            pod_spec(container("web", env=[ENV_REF])),
            [Use("stripe", How(Via.ENV, "API_KEY"), frozenset({"STRIPE_SECRET_KEY"}))],
            id="env-secretKeyRef-in-a-container",
        ),
        pytest.param(
            pod_spec(container("web"), init=[container("migrate", env=[ENV_REF])]),
            [Use("stripe", How(Via.ENV, "API_KEY"), frozenset({"STRIPE_SECRET_KEY"}))],
            id="env-secretKeyRef-in-an-init-container",
        ),
        pytest.param(
            pod_spec(container("web"), ephemeralContainers=[{"name": "debug", "image": "x", "env": [ENV_REF]}]),
            [Use("stripe", How(Via.ENV, "API_KEY"), frozenset({"STRIPE_SECRET_KEY"}))],
            id="env-secretKeyRef-in-an-ephemeral-container",
        ),
        pytest.param(
            pod_spec(container("web", env=[OPTIONAL_ENV_REF])),
            [Use("stripe", How(Via.ENV, "OPT"), frozenset({"MAYBE"}), optional=True)],
            id="optional-secretKeyRef",
        ),
        pytest.param(
            pod_spec(container("web", envFrom=[ENV_FROM, {"configMapRef": {"name": "cm"}}])),
            [Use("bulk", How(Via.ENV_FROM))],
            id="envFrom-secretRef",
        ),
        pytest.param(
            pod_spec(container("web"), volumes=[{"name": "certs", "secret": {"secretName": "tls"}}]),
            [Use("tls", How(Via.VOLUME, "certs"))],
            id="secret-volume",
        ),
        pytest.param(
            pod_spec(
                container("web"),
                volumes=[
                    {"name": "certs", "secret": {"secretName": "tls", "items": [{"key": "ca.crt", "path": "ca"}]}}
                ],
            ),
            [Use("tls", How(Via.VOLUME, "certs"), frozenset({"ca.crt"}))],
            id="secret-volume-with-items",
        ),
        pytest.param(
            pod_spec(
                container("web"),
                volumes=[
                    {
                        "name": "all",
                        "projected": {
                            "sources": [
                                {"secret": {"name": "tls", "items": [{"key": "tls.key", "path": "k"}]}},
                                {"configMap": {"name": "cm"}},
                                {"secret": {"name": "extra", "optional": True}},
                            ]
                        },
                    }
                ],
            ),
            [
                Use("extra", How(Via.PROJECTED_VOLUME, "all"), None, optional=True),
                Use("tls", How(Via.PROJECTED_VOLUME, "all"), frozenset({"tls.key"})),
            ],
            id="projected-volume-secret-sources",
        ),
        pytest.param(
            pod_spec(container("web"), imagePullSecrets=[{"name": "registry-pull-secret"}]),
            [Use("registry-pull-secret", How(Via.IMAGE_PULL_SECRETS))],
            id="imagePullSecrets",
        ),
        pytest.param(pod_spec(container("web")), [], id="nothing"),
        pytest.param(
            pod_spec(container("web", env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": 3}}}, "junk"])),  # type: ignore[list-item]
            [],
            id="malformed-entries-reference-nothing",
        ),
    ],
)
@pytest.mark.parametrize("kind", ["Deployment", "CronJob", "Pod"])
def test_the_reference_finder_sees_every_kind_of_reference(kind: str, spec: JsonObject, expected: list[Use]) -> None:
    assert list(secret_uses(workload(kind, spec=spec))) == expected


def test_link_annotations_on_the_workload_and_its_template_count_as_references() -> None:
    obj = workload(
        annotations={"env.secrets.smll.io/API_KEY": "stripe/STRIPE_SECRET_KEY", "env.secrets.smll.io/BAD": "nope"},
        template_annotations={"env.secrets.smll.io/DB": "db/DATABASE_URL"},
    )

    assert secret_uses(obj) == (
        Use("db", How(Via.LINK, "DB"), frozenset({"DATABASE_URL"})),
        Use("stripe", How(Via.LINK, "API_KEY"), frozenset({"STRIPE_SECRET_KEY"})),
    )


@pytest.mark.parametrize(
    ("how", "shown"),
    [
        pytest.param(How(Via.ENV, "API_KEY"), "env API_KEY", id="env"),
        pytest.param(How(Via.ENV_FROM), "envFrom", id="envFrom"),
        pytest.param(How(Via.VOLUME, "certs"), "volume certs", id="volume"),
        pytest.param(How(Via.PROJECTED_VOLUME, "all"), "projected volume all", id="projected"),
        pytest.param(How(Via.IMAGE_PULL_SECRETS), "imagePullSecrets", id="pull"),
        pytest.param(How(Via.LINK, "DB"), "link DB", id="link"),
    ],
)
def test_a_use_is_shown_in_messages_as_where_and_by_which_name(how: How, shown: str) -> None:
    assert str(how) == shown


def test_only_a_pull_secret_is_for_image_pulls() -> None:
    assert Use("pull", How(Via.IMAGE_PULL_SECRETS)).for_image_pull
    assert not any(Use("s", How(via, "x")).for_image_pull for via in Via if via is not Via.IMAGE_PULL_SECRETS)
