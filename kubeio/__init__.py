"""Thin edges to the Kubernetes API shared by the webhook and the controller: raw JSON requests and informers.

Importing this package first makes kubernetes-asyncio lean (kubeio/lean.py): the processes load its REST
machinery, not its thousands of generated models.
"""

from kubeio import lean

lean.install()
