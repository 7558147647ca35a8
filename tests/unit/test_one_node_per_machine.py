"""One node per machine: a control plane refused its node leaves the running node's host settings alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import devenv.cluster as cluster


class RefusedNode:
    """A node whose host is taken: ``prepare_host`` refuses, as it does while another node runs."""

    def __init__(self, workdir: Path, *args: Any, **kwargs: Any) -> None:
        self.workdir = workdir

    def prepare_host(self) -> None:
        raise RuntimeError("a local node already runs on this machine")


def test_a_plane_refused_its_node_never_cleans_the_host_of_the_node_that_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cleaned: list[Path | None] = []

    def clean_host(workdir: Path | None = None) -> list[str]:
        cleaned.append(workdir)
        return []

    monkeypatch.setattr(cluster, "Node", RefusedNode)
    monkeypatch.setattr(cluster, "ensure_node_binaries", lambda: None)
    monkeypatch.setattr(cluster, "clean_host", clean_host)
    monkeypatch.setattr(cluster.ControlPlane, "_write_pki", lambda self: None)
    monkeypatch.setattr(cluster.ControlPlane, "_write_admission_client", lambda self: None)
    monkeypatch.setattr(cluster.ControlPlane, "_components", lambda self: {})
    plane = cluster.ControlPlane(tmp_path, binaries=None, with_node=True)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="already runs"):
        plane.start()
    plane.stop()  # what running_control_plane's `finally` does
    assert plane.node is None
    assert cleaned == []
