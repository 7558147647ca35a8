"""Whether a key name says what it holds (the product page's best practice: descriptive key names).

One definition for both paths that give the hint: the mutating webhook's warning on a link and the write-only API's
advice on a Secret. A key made only of words that say nothing (KEY_1, SECRET, AUTH_TOKEN, MyToken) gets it;
STRIPE_SECRET_KEY, DATABASE_URL and API_KEY do not.
"""

from __future__ import annotations

import re

# Words that say nothing about what a value is for: a key made only of them (and digits) is flagged.
VAGUE_WORDS = frozenset(
    {"key", "keys", "secret", "secrets", "value", "values", "val", "data", "token", "password", "pass", "passwd",
     "pwd", "pw", "var", "env", "config", "cfg", "conf", "test", "tmp", "temp", "foo", "bar", "baz", "new", "old",
     "my", "the", "string", "str", "item", "field", "setting", "settings", "credential", "credentials", "cred",
     "creds", "auth", "x", "y", "a", "b", "s", "k", "v"}
)  # fmt: skip
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


def vague_key(key: str) -> bool:
    words = [word.lower() for word in _WORD.findall(key) if not word.isdigit()]
    return not words or all(word in VAGUE_WORDS for word in words)
