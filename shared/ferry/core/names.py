"""Names that reach paths, branches and keys: services and environments are DNS labels."""

from __future__ import annotations

import re

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def check_label(value: str, what: str = "name") -> str:
    """Return VALUE if it is a DNS label (RFC 1123, at most 63 characters); else ValueError."""
    if not isinstance(value, str) or len(value) > 63 or not DNS_LABEL.match(value):
        raise ValueError(
            f"{what} must be a DNS label (lower-case letters, digits and '-', "
            f"at most 63 characters), got {value!r}"
        )
    return value


def check_digest(value: str, what: str = "digest") -> str:
    """Return VALUE if it is an immutable image digest, else raise ValueError naming the field."""
    if not isinstance(value, str) or not DIGEST.match(value):
        hint = (
            " (a tag is not a digest: build once, promote the digest)"
            if isinstance(value, str) and not value.startswith("sha256:")
            else ""
        )
        raise ValueError(f"{what} must be sha256:<64 lowercase hex>, got {value!r}{hint}")
    return value
