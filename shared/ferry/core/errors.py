"""Errors that decide what the bus does with an entry."""


class Rejected(ValueError):
    """Permanent: retrying cannot help. The entry goes to the dead-letter stream at once, and the
    message is the sentence a person reads there, so it must say what to fix."""
