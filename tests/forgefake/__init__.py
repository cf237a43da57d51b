"""A fake forge for the tests: one real HTTP server on a loopback port that speaks the subset of
GitHub's REST v3, Gitea's v1 and GitLab's v4 APIs that Ferry calls, over real bare repositories,
with git over HTTP (`git http-backend`) behind token authentication, and fault injection."""

from tests.forgefake.server import FakeForge, Fault

__all__ = ["Fault", "FakeForge"]
