"""The admission patch: applying it (with the jsonpatch library) to the old object gives exactly the new one."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
from hypothesis import given, settings
from hypothesis import strategies as st

from webhook.admission import json_patch

keys = st.sampled_from(["a", "b", "env", "x/y", "t~1", "", "0"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=4),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=1500, deadline=None)
@given(json_values, json_values)
def test_the_patch_turns_old_into_new_for_any_json(old: Any, new: Any) -> None:
    before = copy.deepcopy(old)

    patched = jsonpatch.apply_patch({"root": old}, _rooted(json_patch(old, new)))["root"]

    assert patched == new
    assert old == before


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_no_change_means_no_operations(value: Any) -> None:
    assert json_patch(value, copy.deepcopy(value)) == []


def _rooted(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ops under /root, so that a replace of the whole document is a plain op too."""
    return [{**op, "path": "/root" + op["path"]} for op in ops]
