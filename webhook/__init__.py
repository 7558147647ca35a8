"""The admission server: mutating (linking) and validating (protection) webhooks."""

import kubeio  # noqa: F401 - first, so that kubernetes-asyncio is imported lean (kubeio/lean.py)
