"""``kubectl smll``: one-line writes through the write-only Secrets API (docs/write-only-secrets.md)."""
