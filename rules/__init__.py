"""The rules of the product as pure functions over plain dicts: no I/O, no Kubernetes client, no HTTP."""
