"""The admission server: mutating (linking) and validating (protection) webhooks."""
