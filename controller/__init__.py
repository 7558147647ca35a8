"""The controller: rollouts on Secret changes and generated credentials."""

import kubeio  # noqa: F401 - first, so that kubernetes-asyncio is imported lean (kubeio/lean.py)
