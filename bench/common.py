"""What the benchmarks share: the realistic review they send, percentiles, the machine, and a plain table."""

from __future__ import annotations

import os
import platform
import statistics
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rules.names import LINK_PREFIX, REVISION

JsonObject = dict[str, Any]
NAMESPACE = "shop"
# The Secrets the links point at, and their keys: the webhook's SecretKeyIndex is filled with these.
SECRETS: dict[str, list[str]] = {
    "stripe": ["STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"],
    "orders-db": ["DATABASE_URL", "DATABASE_PASSWORD", "DATABASE_USER"],
    "redis": ["REDIS_URL", "REDIS_PASSWORD"],
    "sendgrid": ["SENDGRID_API_KEY"],
    "sentry": ["SENTRY_DSN", "SENTRY_AUTH_TOKEN"],
}
LINKS = [(secret, key) for secret, keys in SECRETS.items() for key in keys][:10]


def secret_objects(namespace: str = NAMESPACE) -> list[JsonObject]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": {key: "eA==" for key in keys},
        }
        for name, keys in SECRETS.items()
    ]


def _container(name: str, port: int) -> JsonObject:
    return {
        "name": name,
        "image": f"registry.example.com/shop/{name}:2024.11.3-7f3c2a1",
        "imagePullPolicy": "IfNotPresent",
        "command": ["/app/bin/" + name],
        "args": ["--config=/etc/shop/config.yaml", f"--listen=:{port}", "--log-format=json"],
        "ports": [
            {"name": "http", "containerPort": port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": port + 1000, "protocol": "TCP"},
        ],
        "env": [
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "SERVICE_NAME", "value": name},
            {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector.observability:4317"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}},
            {
                "name": "GOMAXPROCS",
                "valueFrom": {"resourceFieldRef": {"containerName": name, "resource": "limits.cpu", "divisor": "1"}},
            },
        ],
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http", "scheme": "HTTP"},
            "initialDelaySeconds": 5,
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
            "initialDelaySeconds": 15,
            "periodSeconds": 20,
            "timeoutSeconds": 2,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/shop", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - a path inside the pod
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }


def linked_deployment(name: str = "checkout", namespace: str = NAMESPACE, *, links: int = 10) -> JsonObject:
    """A Deployment as a real one looks: 3 containers, probes, resources, ordinary env, ``links`` link annotations."""
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "shop", "team": "payments"}
    annotations = {f"{LINK_PREFIX}{key}": f"{secret}/{key}" for secret, key in LINKS[:links]}
    annotations[REVISION] = "1"
    annotations["owner.example.com/contact"] = "payments-oncall@example.com"
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "replicas": 3,
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9080"},
                },
                "spec": {
                    "serviceAccountName": name,
                    "terminationGracePeriodSeconds": 30,
                    "dnsPolicy": "ClusterFirst",
                    "restartPolicy": "Always",
                    "schedulerName": "default-scheduler",
                    "securityContext": {"fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [_container("api", 8080), _container("worker", 8081), _container("outbox", 8082)],
                    "volumes": [
                        {"name": "config", "configMap": {"name": f"{name}-config", "defaultMode": 420}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "podAffinityTerm": {
                                        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": name}},
                                        "topologyKey": "kubernetes.io/hostname",
                                    },
                                }
                            ]
                        }
                    },
                },
            },
        },
    }


def admission_review(obj: JsonObject, *, operation: str = "CREATE") -> JsonObject:
    """An AdmissionReview as the apiserver sends it for a Deployment."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "requestKind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "requestResource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "operation": operation,
            "userInfo": {
                "username": "system:serviceaccount:argocd:argocd-application-controller",
                "uid": "5f0c7e7a-2d0b-4c55-9c1f-3e1b1c9d8a70",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:argocd", "system:authenticated"],
            },
            "object": obj,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions", "fieldManager": "argocd-controller"},
        },
    }


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (fraction 0.5 → p50, 0.99 → p99)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p90 / p99 / max / mean of durations given in seconds, in milliseconds."""
    return {
        "p50": percentile(seconds, 0.50) * 1000,
        "p90": percentile(seconds, 0.90) * 1000,
        "p99": percentile(seconds, 0.99) * 1000,
        "max": max(seconds) * 1000 if seconds else float("nan"),
        "mean": statistics.fmean(seconds) * 1000 if seconds else float("nan"),
    }


def machine() -> str:
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "?"
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    return f"{os.cpu_count()} CPUs ({model}), {memory} RAM, Python {platform.python_version()}, {platform.system()}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def load_average() -> str:
    """The 1/5/15-minute load averages: how busy the machine was with other work while measuring."""
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "?"
