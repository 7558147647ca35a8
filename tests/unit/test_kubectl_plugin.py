"""``kubectl smll``: how its arguments become a SecretWrite, and what it prints (never a value)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest

from kubectl_smll.main import UsageError, kubectl_flags, parse_assignments, parser, secret_write, summary


def test_values_come_from_the_line_a_file_or_stdin(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_bytes(b"PEM\n")
    values = parse_assignments(["A=lit=eral", f"B=@{tmp_path / 'cert.pem'}", "C=-", "D="], io.BytesIO(b"from stdin\n"))
    assert values == {"A": b"lit=eral", "B": b"PEM\n", "C": b"from stdin\n", "D": b""}


@pytest.mark.parametrize(
    ("items", "says"),
    [
        (["A"], "give KEY=VALUE"),
        (["=x"], "give KEY=VALUE"),
        (["a b=x"], "not a valid Secret key"),
        (["A=1", "A=2"], "given twice"),
        (["A=-", "B=-"], "only one key"),
        (["A=@/nonexistent/file"], "cannot read /nonexistent/file"),
    ],
)
def test_bad_arguments_say_what_to_fix_and_never_echo_a_value(items: list[str], says: str) -> None:
    with pytest.raises(UsageError) as refused:
        parse_assignments(items, io.BytesIO(b""))
    assert says in str(refused.value)


@pytest.mark.parametrize("item", ["bad key=sk_live_value", "sk_live_value", "A=sk_live_value"])
def test_a_refusal_never_echoes_the_value(item: str) -> None:
    with pytest.raises(UsageError) as refused:
        parse_assignments([item, item], io.BytesIO(b""))
    assert "sk_live_value" not in str(refused.value)


def test_the_write_carries_values_as_base64_in_its_body() -> None:
    body = secret_write("stripe", {"K": b"v"}, ["OLD"], True)
    assert body == {
        "apiVersion": "secrets.smll.io/v1alpha1",
        "kind": "SecretWrite",
        "spec": {"secretName": "stripe", "data": {"K": base64.b64encode(b"v").decode()}, "remove": ["OLD"],
                 "allowGenerated": True},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("status", "line"),
    [
        ({"created": True, "set": ["A", "B"]}, "secret/stripe created: set A, B"),
        ({"set": ["A", "B"], "removed": ["C"]}, "secret/stripe updated: set A, B; removed C"),
        ({"removed": ["A"]}, "secret/stripe updated: removed A"),
        ({"created": False, "set": [], "removed": []}, "secret/stripe updated: nothing to change"),
    ],
)
def test_one_line_says_what_happened(status: dict[str, object], line: str) -> None:
    assert summary({"spec": {"secretName": "stripe"}, "status": status}) == line


def test_kubectl_s_own_flags_are_passed_on() -> None:
    args = parser().parse_args(
        ["secrets", "set", "s", "A=1", "-n", "shop", "--context", "prod", "--as", "ci", "--as-group", "g"]
    )
    assert kubectl_flags(args) == ["--context=prod", "--namespace=shop", "--as=ci", "--as-group=g"]
