"""Ferry: promote container image digests between environments by pull request."""

__version__ = "0.1.0"
