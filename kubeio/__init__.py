"""Thin edges to the Kubernetes API shared by the webhook and the controller: raw JSON requests and informers."""
