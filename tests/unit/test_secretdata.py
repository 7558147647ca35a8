"""What goes into the product's Secrets: passwords, base64 values, labels."""

from __future__ import annotations

import base64
import binascii

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules import secretdata
from rules.names import COMPONENT_LABEL, MANAGED_BY_LABEL, SECRET_TYPE_LABEL


def test_passwords_come_from_a_csprng_alphanumeric_long_and_fit_bcrypt() -> None:
    passwords = {secretdata.generate_password() for _ in range(50)}

    assert len(passwords) == 50
    for password in passwords:
        assert password.isascii()
        assert password.isalnum()
        assert 32 <= len(password.encode()) < 72


@pytest.mark.parametrize("value", ["", "p@ss/word:x", "ünïcode", b"\x00\xff"], ids=["empty", "ascii", "utf8", "bytes"])
def test_a_value_decodes_to_what_was_encoded(value: str | bytes) -> None:
    raw = value.encode() if isinstance(value, str) else value
    assert secretdata.decode(secretdata.encode(value)) == raw


def test_data_decodes_to_text_and_what_is_not_base64_or_text_reads_as_empty() -> None:
    data = {"ok": secretdata.encode("hello"), "not-base64": "***", "not-text": secretdata.encode(b"\xff\xfe")}

    assert secretdata.decode_data(data) == {"ok": "hello", "not-base64": "", "not-text": ""}


@given(
    st.one_of(
        st.text(alphabet="ABCabc0189+/=\n -_*é", max_size=24),
        st.binary(max_size=24).map(lambda raw: base64.b64encode(raw).decode()),
    )
)
def test_decode_answers_as_the_standard_librarys_strict_base64(value: str) -> None:
    try:
        expected: bytes | type[ValueError] = base64.b64decode(value, validate=True)
    except ValueError:
        expected = ValueError
    try:
        found: bytes | type[ValueError] = secretdata.decode(value)
    except (ValueError, binascii.Error):
        found = ValueError

    assert found == expected


def test_decode_refuses_what_is_not_base64() -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - binascii.Error is a ValueError, and the only one raised
        secretdata.decode("***")


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        pytest.param({}, {MANAGED_BY_LABEL: "smll-secrets"}, id="managed"),
        pytest.param(
            {"secret_type": "registry"}, {MANAGED_BY_LABEL: "smll-secrets", SECRET_TYPE_LABEL: "registry"}, id="type"
        ),
        pytest.param(
            {"component": "database-rotation"},
            {MANAGED_BY_LABEL: "smll-secrets", COMPONENT_LABEL: "database-rotation"},
            id="component",
        ),
    ],
)
def test_the_product_labels_what_it_writes(arguments: dict[str, str], expected: dict[str, str]) -> None:
    assert secretdata.labels(**arguments) == expected
