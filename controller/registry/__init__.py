"""Per-VPC registry credentials: the edge that reads and writes what ``rules.registry`` decides.

- ``config``: what the loop is configured with (the registry, the htpasswd Secret, the controller's namespace);
- ``caches``: what five informers keep — namespaces, the htpasswd Secret, the registry Secrets (label-selected),
  the rotation Secrets in the controller's namespace (a password on its way in) and the ``default``
  ServiceAccounts — each change enqueuing the namespaces it concerns;
- ``verifier``: bcrypt checks of the live passwords, remembered and run off the event loop;
- ``reconciler``: one namespace brought to its desired state, one guarded write at a time;
- ``loop``: the informers, the queue and the reconcile wired into the controller's frame.
"""
