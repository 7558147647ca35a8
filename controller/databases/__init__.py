"""Generated database credentials: the edge that runs what ``rules.database`` decides.

- ``config``: the PostgreSQL servers the loop is configured with;
- ``postgres``: the SQL, with asyncpg;
- ``reconciler``: one Database brought to its desired state (server, credentials Secret, status, rotation);
- ``loop``: the informer, the queue and the reconcile wired into the controller's frame.
"""
