"""Build the adapters a worker needs from settings: the GitOps repository and the forge."""

from __future__ import annotations

from ferry.runtime.settings import Settings
from ferry.runtime.worker import WorkerContext


class ConfigError(RuntimeError):
    """Configuration that cannot work; the message says which variable to set."""


def gitops_remote(settings: Settings) -> str:
    if not settings.gitops_repo:
        raise ConfigError(
            "FERRY_GITOPS_REPO is not set: point it at the GitOps repository "
            "(`ferry init PATH` makes one)"
        )
    return settings.gitops_repo


def gitops(ctx: WorkerContext):  # noqa: ANN201 - GitOpsRepo, imported lazily
    from ferry.adapters.gitops import GitOpsRepo

    if "gitops" not in ctx.resources:
        ctx.resources["gitops"] = GitOpsRepo(
            remote=gitops_remote(ctx.settings), workdir=ctx.settings.workdir(ctx.name)
        )
    return ctx.resources["gitops"]


def forge(settings: Settings):  # noqa: ANN201 - a Forge
    if settings.forge != "local":
        raise ConfigError(
            f"FERRY_FORGE={settings.forge} is not available in this version: use 'local'"
        )
    from ferry.adapters.forge import LocalForge

    return LocalForge(gitops_remote(settings))


def connect(settings: Settings):  # noqa: ANN201 - a Bus
    """The bus at FERRY_REDIS_URL, or at the embedded server `ferry up` recorded."""
    from ferry.adapters.bus import Bus
    from ferry.adapters.embedded import resolve_url

    return Bus(settings, resolve_url(settings))


def open_repo(settings: Settings):  # noqa: ANN201 - a GitOpsRepo
    """The GitOps repository as the CLI reads it (its own clone under FERRY_HOME)."""
    from ferry.adapters.gitops import GitOpsRepo

    return GitOpsRepo(remote=gitops_remote(settings), workdir=settings.home / "work" / "cli")
