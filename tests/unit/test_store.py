"""The frame's Store: what an informer's list and events change, and what they report."""

from __future__ import annotations

from controller.frame.store import JsonObject, Store, name_of


def obj(name: str, value: str = "v", namespace: str = "shop") -> JsonObject:
    return {"metadata": {"name": name, "namespace": namespace}, "value": value}


def keep_value(found: JsonObject) -> tuple[tuple[str, str], str] | None:
    """Keeps only ``value``, and nothing of an object named ``skip``."""
    return None if name_of(found)[1] == "skip" else (name_of(found), str(found["value"]))


def recording() -> tuple[Store[tuple[str, str], str], list[tuple[str, str | None, str | None]]]:
    changes: list[tuple[str, str | None, str | None]] = []
    store: Store[tuple[str, str], str] = Store(
        keep_value, changed=lambda key, before, after: changes.append((key[1], before, after))
    )
    return store, changes


def test_a_relist_reports_every_key_present_or_gone_and_keeps_only_what_compact_returns() -> None:
    store, changes = recording()
    store.replace([store.compact(obj("a")), store.compact(obj("b")), store.compact(obj("skip"))])
    assert changes == [("a", None, "v"), ("b", None, "v")]
    changes.clear()

    store.replace([store.compact(obj("a", "new"))])

    assert changes == [("a", "v", "new"), ("b", "v", None)]
    assert dict(store) == {("shop", "a"): "new"}
    assert store.synced


def test_events_set_and_drop_one_key_and_write_through_reports_nothing() -> None:
    store, changes = recording()
    assert not store.synced
    store.apply("ADDED", store.compact(obj("a")))
    store.apply("MODIFIED", store.compact(obj("a", "w")))
    store.apply("DELETED", store.compact(obj("a", "w")))
    store.apply("ADDED", store.compact(obj("skip")))
    store.put(("shop", "mine"), "written")

    assert changes == [("a", None, "v"), ("a", "v", "w"), ("a", "w", None)]
    assert store.get(("shop", "mine")) == "written"
    store.discard(("shop", "mine"))
    assert len(store) == 0
