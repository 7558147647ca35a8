"""The demo's registry in the cluster: its token configuration names what the chart serves."""

from __future__ import annotations

import urllib.parse

import yaml

from devenv.registry import ClusterRegistry
from rules.registry import registry_host


def test_the_registrys_token_config_points_at_the_charts_token_service_and_bundle() -> None:
    registry = ClusterRegistry("10.244.0.1", "smll-system", "smll-secrets-registry-token-ca")
    values = registry.chart_values()
    token = registry.config()["auth"]["token"]  # type: ignore[index]

    assert registry_host(str(values["url"])) == registry.host == token["service"]  # REGISTRY_URL is the audience
    realm = urllib.parse.urlsplit(token["realm"])
    assert realm.port == values["tokens"]["nodePort"]  # type: ignore[index]
    assert realm.hostname == "10.244.0.1"
    assert realm.path == "/token"
    assert token["issuer"] == values["tokens"]["issuer"]  # type: ignore[index]

    config, deployment, service = registry.manifests("127.0.0.1:5000/smll-registry:2.8.2")
    assert yaml.safe_load(config["data"]["config.yml"])["auth"] == {"token": token}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["token-ca"]["configMap"]["name"] == "smll-secrets-registry-token-ca"
    assert token["rootcertbundle"] == "/etc/registry/token/ca.crt"
    assert service["spec"]["ports"][0]["nodePort"] == int(registry.host.rsplit(":", 1)[1])
