"""Properties of linking that hold for every input hypothesis can make."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rules.links import LinkDenied, link_object
from tests.factories import secret
from webhook.secret_keys import SecretKeyIndex

names = st.sampled_from(["web", "worker", "migrate", "", "a-b"])
vars_ = st.sampled_from(["API_KEY", "DB", "MODE", "1X", "A-B", ""])
values = st.one_of(
    st.sampled_from(["stripe/STRIPE_SECRET_KEY", "db/DATABASE_URL", "missing/K", "stripe", "/", "Bad/x", ""]),
    st.text(max_size=12),
)
env_entry = st.one_of(
    st.fixed_dictionaries({"name": vars_, "value": st.text(max_size=5)}),
    st.fixed_dictionaries(
        {
            "name": vars_,
            "valueFrom": st.fixed_dictionaries(
                {
                    "secretKeyRef": st.fixed_dictionaries(
                        {"name": st.just("stripe"), "key": st.just("STRIPE_SECRET_KEY")}
                    )
                }
            ),
        }
    ),
    st.integers(),
    st.none(),
)
container = st.fixed_dictionaries(
    {"name": names, "image": st.just("x")},
    optional={"env": st.one_of(st.lists(env_entry, max_size=4), st.none(), st.text(max_size=2))},
)
annotation_sets = st.dictionaries(
    st.one_of(
        vars_.map(lambda v: "env.secrets.smll.io/" + v),
        st.just("secrets.smll.io/containers"),
        st.just("secrets.smll.io/managed-env"),
        st.text(max_size=6),
    ),
    st.one_of(values, st.sampled_from(["web", "worker,migrate", "{}", '{"web":["API_KEY"]}', "[1]"])),
    max_size=4,
)
pod_specs = st.one_of(
    st.fixed_dictionaries(
        {"containers": st.lists(container, max_size=3)}, optional={"initContainers": st.lists(container, max_size=2)}
    ),
    st.none(),
    st.text(max_size=3),
)
kinds = st.sampled_from(["Deployment", "CronJob", "Pod", "Job", "ConfigMap"])


@st.composite
def objects(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(kinds)
    spec = draw(pod_specs)
    template_metadata = draw(st.one_of(st.just({"annotations": draw(annotation_sets)}), st.text(max_size=2), st.none()))
    template: dict[str, Any] = {"metadata": template_metadata, "spec": spec}
    obj: dict[str, Any] = {"kind": kind, "metadata": {"name": "x", "annotations": draw(annotation_sets)}}
    if kind == "Pod":
        obj["spec"] = spec
    elif kind == "CronJob":
        obj["spec"] = {"jobTemplate": {"spec": {"template": template}}}
    else:
        obj["spec"] = {"template": template}
    return kind, obj


INDEX = SecretKeyIndex()
INDEX.replace([secret("stripe", STRIPE_SECRET_KEY="eA=="), secret("db", DATABASE_URL="eA==")])


@settings(max_examples=600, deadline=None)
@given(objects())
def test_linking_never_raises_anything_but_a_denial_and_is_idempotent(case: tuple[str, dict[str, Any]]) -> None:
    kind, obj = case
    original = copy.deepcopy(obj)
    with contextlib.suppress(LinkDenied):
        once = link_object(obj, kind=kind, namespace="shop", secret_keys=INDEX).obj
        twice = link_object(once, kind=kind, namespace="shop", secret_keys=INDEX).obj
        assert twice == once
    assert obj == original, "linking must not change its input"
