"""Informers that never read managedFields decode objects without them: the cut is exact, or nothing is cut."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest

from kubeio.rest import without_managed_fields

TRICKY_MANAGER = 'kubectl ]},"spec":{} \\"quoted\\" ]}}'  # a manager may be named anything


def deployment(name: str, manager: str = "kubectl-client-side-apply") -> dict[str, Any]:
    fields = {"f:metadata": {"f:annotations": {".": {}, "f:env.secrets.smll.io/A": {}}}, "f:spec": {"f:replicas": {}}}
    return {
        "metadata": {
            "name": name,
            "namespace": "shop",
            "annotations": {"env.secrets.smll.io/A": "s/k", "note": '],"managedFields":[ ]},"'},
            "managedFields": [
                {"manager": manager, "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": fields},
                {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status"},
            ],
        },
        "spec": {"replicas": 0, "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": []}}},
        "status": {"observedGeneration": 1},
    }


def stripped(obj: Any) -> Any:
    found = copy.deepcopy(obj)
    for item in found.get("items") or [found.get("object") or found]:
        item["metadata"].pop("managedFields", None)
    return found


@pytest.mark.parametrize(
    "document",
    [
        pytest.param({"kind": "DeploymentList", "metadata": {"continue": "x"}, "items": []}, id="empty-list"),
        pytest.param(
            {"kind": "DeploymentList", "items": [deployment("a"), deployment("b", TRICKY_MANAGER), deployment("c")]},
            id="list",
        ),
        pytest.param({"type": "MODIFIED", "object": deployment("a", TRICKY_MANAGER)}, id="watch-event"),
        pytest.param({"metadata": {"name": "s"}, "data": {"K": "dg=="}, "type": "Opaque"}, id="no-managed-fields"),
    ],
)
def test_the_cut_leaves_exactly_the_object_without_its_managed_fields(document: dict[str, Any]) -> None:
    for text in (json.dumps(document, separators=(",", ":")).encode(), orjson.dumps(document)):
        assert orjson.loads(without_managed_fields(text)) == stripped(document)


def test_text_that_does_not_fit_is_left_whole() -> None:
    text = b'{"metadata":{"name":"a","managedFields":[{"manager":"m"}]}}'  # metadata the last field: no end found

    assert without_managed_fields(text) == text


def test_an_object_whose_metadata_is_its_last_field_is_never_cut_into_the_next() -> None:
    document = {"items": [{"metadata": {"name": "a", "managedFields": [{"manager": "m"}]}}, deployment("b")]}
    text = orjson.dumps(document)

    assert orjson.loads(without_managed_fields(text)) == document
