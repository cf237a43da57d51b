"""Build the adapters a worker needs from settings: the GitOps repository and the forge."""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import urlsplit

from ferry.runtime.settings import Settings
from ferry.runtime.worker import WorkerContext

_CREATING = threading.Lock()


class ConfigError(RuntimeError):
    """Configuration that cannot work; the message says which variable to set."""


def gitops_remote(settings: Settings) -> str:
    if not settings.gitops_repo:
        raise ConfigError(
            "FERRY_GITOPS_REPO is not set: point it at the GitOps repository "
            "(`ferry init PATH` makes one)"
        )
    remote = settings.gitops_repo
    path = _local_path(remote)
    if path is not None and not path.exists():
        raise ConfigError(
            f"FERRY_GITOPS_REPO={remote} does not exist: point it at the GitOps repository "
            "(e.g. FERRY_GITOPS_REPO=$HOME/gitops), or make one with `ferry init PATH`"
        )
    return remote


def _local_path(remote: str) -> Path | None:
    """The path on this machine REMOTE names; None for a URL (https://, ssh://) or host:path."""
    if remote.startswith("file://"):
        return Path(remote.removeprefix("file://"))
    if "://" in remote or ":" in remote.split("/", 1)[0]:
        return None
    return Path(remote).expanduser()


def gitops(ctx: WorkerContext):  # noqa: ANN201 - GitOpsRepo, imported lazily
    found = ctx.resources.get("gitops")
    if found is not None:  # asked twice per decision
        return found
    from ferry.adapters.gitops import GitOpsRepo

    with _CREATING:  # one per worker, whichever of its threads asks first
        if "gitops" not in ctx.resources:
            ctx.resources["gitops"] = GitOpsRepo(
                remote=gitops_remote(ctx.settings), workdir=ctx.settings.workdir(ctx.name)
            )
    return ctx.resources["gitops"]


def forge(settings: Settings):  # noqa: ANN201 - a Forge
    """The forge FERRY_FORGE names; an HTTP forge shares its request budget through Redis."""
    if settings.forge == "local":
        from ferry.adapters.forge import LocalForge

        return LocalForge(gitops_remote(settings))
    import redis

    from ferry.adapters.embedded import resolve_url
    from ferry.adapters.forge.providers import http_forge

    return http_forge(
        settings,
        redis.Redis.from_url(resolve_url(settings)),
        repo=forge_repo(settings),
        api_url=forge_url(settings),
    )


def _loopback(host: str | None) -> bool:
    return host in ("localhost", "::1") or bool(host and host.startswith("127."))


def _check_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and _loopback(parts.hostname)):
        if parts.username or parts.password:
            raise ConfigError(
                f"{name} must not carry credentials: put the token in FERRY_FORGE_TOKEN"
            )
        return
    raise ConfigError(
        f"{name} must be an https:// URL (http:// only on a loopback address), got {url!r}"
    )


def forge_url(settings: Settings) -> str:
    """FERRY_FORGE_URL, checked; github.com's API when unset and FERRY_FORGE=github."""
    url = settings.forge_url or ("https://api.github.com" if settings.forge == "github" else None)
    if not url:
        raise ConfigError(
            f"FERRY_FORGE_URL is not set: give the API base of the {settings.forge} server "
            "(e.g. https://HOST/api/v4 for GitLab, https://HOST/api/v1 for Gitea)"
        )
    _check_url("FERRY_FORGE_URL", url)
    if settings.forge_token is None or not settings.forge_token.get_secret_value():
        raise ConfigError(f"FERRY_FORGE_TOKEN is not set: FERRY_FORGE={settings.forge} needs one")
    return url


def forge_repo(settings: Settings) -> str:
    """FERRY_FORGE_REPO, or the owner/name (GitLab: the project path) the clone URL names."""
    remote = gitops_remote(settings)
    _check_url("FERRY_GITOPS_REPO", remote)
    if settings.forge_repo:
        return settings.forge_repo.strip("/")
    path = urlsplit(remote).path.strip("/").removesuffix(".git")
    if path.count("/") < 1:
        raise ConfigError(
            f"cannot tell the repository from FERRY_GITOPS_REPO={remote!r}: set FERRY_FORGE_REPO "
            "to owner/name"
        )
    return path


def connect(settings: Settings):  # noqa: ANN201 - a Bus
    """The bus at FERRY_REDIS_URL, or at the embedded server `ferry up` recorded."""
    from ferry.adapters.bus import Bus
    from ferry.adapters.embedded import resolve_url

    return Bus(settings, resolve_url(settings))


def open_repo(settings: Settings):  # noqa: ANN201 - a GitOpsRepo
    """The GitOps repository as the CLI reads it (its own clone under FERRY_HOME)."""
    from ferry.adapters.gitops import GitOpsRepo

    return GitOpsRepo(
        remote=gitops_remote(settings), workdir=settings.home / "work" / "cli", keep_pins=True
    )
