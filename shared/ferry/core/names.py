"""Names that reach paths, branches and keys: services and environments are DNS labels. Other
names (people, checks, images) are free text without line breaks, control characters or
surrounding whitespace, because they are compared with names in ferry.yaml and shown in one-line
reasons. Every check matches the whole string: "api\\n" is not "api"."""

from __future__ import annotations

import re

from ferry.core.errors import quote

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
NAME_MAX = 200


def check_label(value: str, what: str = "name") -> str:
    """Return VALUE if it is a DNS label (RFC 1123, at most 63 characters); else ValueError."""
    if not isinstance(value, str) or len(value) > 63 or not DNS_LABEL.fullmatch(value):
        raise ValueError(
            f"{what} must be a DNS label (lower-case letters, digits and '-', "
            f"at most 63 characters), got {quote(value)}"
        )
    return value


def check_digest(value: str, what: str = "digest") -> str:
    """Return VALUE if it is an immutable image digest, else raise ValueError naming the field."""
    if not isinstance(value, str) or not DIGEST.fullmatch(value):
        hint = (
            " (a tag is not a digest: build once, promote the digest)"
            if isinstance(value, str) and not value.startswith("sha256:")
            else ""
        )
        raise ValueError(f"{what} must be sha256:<64 lowercase hex>, got {quote(value)}{hint}")
    return value


def check_name(value: str, what: str = "name") -> str:
    """Return VALUE if it is a usable free-text name (a person, a check, an image); else
    ValueError. Inner spaces are fine ("Jane Doe"); surrounding whitespace and control
    characters are not: they would never equal the name written in ferry.yaml."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text, got {quote(value)}")
    if not value or len(value) > NAME_MAX:
        raise ValueError(f"{what} must be 1 to {NAME_MAX} characters, got {quote(value)}")
    if value != value.strip() or not value.isprintable():
        raise ValueError(
            f"{what} must not have surrounding whitespace, line breaks or other invisible "
            f"characters, got {quote(value)}"
        )
    return value
