"""How messages list and count what they name."""

from __future__ import annotations

import pytest

from rules.text import counted, listed, noun


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        pytest.param([], "", id="none"),
        pytest.param(["a"], "a", id="one"),
        pytest.param(list("abcde"), "a, b, c, d, e", id="five"),
        pytest.param(list("abcdefg"), "a, b, c, d, e and 2 more", id="seven"),
    ],
)
def test_a_list_names_five_and_counts_the_rest(names: list[str], expected: str) -> None:
    assert listed(names) == expected


def test_counts_and_nouns_agree() -> None:
    assert [counted(n, "pod") for n in (0, 1, 2)] == ["0 pods", "1 pod", "2 pods"]
    assert [noun(n, "key") for n in (1, 2)] == ["key", "keys"]
