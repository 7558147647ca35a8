"""kubernetes-asyncio, lean (kubeio/lean.py): a fresh process of the product loads no generated model, and its client
still loads a kubeconfig and makes requests (the e2e tests make thousands)."""

from __future__ import annotations

import datetime
import subprocess
import sys
import textwrap
from pathlib import Path

from devenv.process import write_kubeconfig
from rules.certs import make_ca, make_leaf


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def test_the_product_s_processes_import_no_model_and_no_api_class() -> None:
    for entry in ("controller.main", "webhook.server"):
        found = run(f"""
            import sys
            import {entry}
            heavy = [m for m in sys.modules if m.startswith(("kubernetes_asyncio.client.models.",
                     "kubernetes_asyncio.client.api.", "kubernetes_asyncio.dynamic"))]
            print(len(heavy), sys.modules["kubernetes_asyncio.client"].ApiClient.__name__)
        """)
        assert found == "0 ApiClient", entry


def test_the_lean_client_loads_a_kubeconfig(tmp_path: Path) -> None:
    ca = make_ca("test CA", valid_for=datetime.timedelta(days=1))
    admin = make_leaf(ca, "admin", valid_for=datetime.timedelta(days=1), client=True)
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, server="https://127.0.0.1:6443", ca_pem=ca.cert_pem, client=admin, user="admin")
    found = run(f"""
        import asyncio
        from kubeio.client import kube_client
        async def main():
            api = await kube_client({str(kubeconfig)!r})
            print(api.configuration.host, type(api).__module__)
            await api.close()
        asyncio.run(main())
    """)
    assert found == "https://127.0.0.1:6443 kubernetes_asyncio.client.api_client"


def test_in_a_pod_the_client_loads_the_in_cluster_config_and_no_kubeconfig_loader() -> None:
    found = run("""
        import asyncio, os, sys
        os.environ.update(KUBERNETES_SERVICE_HOST="10.0.0.1", KUBERNETES_SERVICE_PORT="443")
        from kubeio.client import kube_client
        async def main():
            outcome = "loaded"  # where this runs in a pod with a service account
            try:
                api = await kube_client(None)
                await api.close()
            except Exception as error:  # elsewhere the in-cluster loader says there is none
                outcome = type(error).__name__
            loaded = "kubernetes_asyncio.config.kube_config" in sys.modules
            print(outcome, "yaml" in sys.modules, loaded)
        asyncio.run(main())
    """)
    assert found in ("ConfigException False False", "loaded False False")
