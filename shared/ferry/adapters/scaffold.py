"""`ferry init PATH`: scaffold a GitOps repository that ferry can promote into."""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from string import Template

from ferry.core.names import check_label
from ferry.core.policy import PolicyError, load_policy

from .git import GitError, git

DEFAULT_SERVICES = ("api", "web")
DEFAULT_ENVS = ("dev", "staging", "prod")
DEFAULT_REGISTRY = "registry.example.com/shop"
GITOPS_REPO_URL = "https://git.example.com/shop/gitops.git"
CHART_REPO_URL = "https://charts.example.com/shop"
COMMIT_MESSAGE = "ferry init: scaffold GitOps repository"

_REGISTRY = re.compile(r"^[a-z0-9]([a-z0-9._:-]*[a-z0-9])?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*$")


class ScaffoldError(ValueError):
    """`ferry init` cannot scaffold here; the message is one line."""


def parse_services(text: str | None) -> list[str]:
    """'a,b' -> ['a', 'b'] (the --services option); None or '' -> the defaults."""
    if not text or not text.strip():
        return list(DEFAULT_SERVICES)
    return [part.strip() for part in text.split(",") if part.strip()]


def _template(name: str) -> Template:
    # Beside this module (ferry is a namespace package, so importlib.resources cannot help).
    return Template((Path(__file__).parent / "templates" / name).read_text("utf-8"))


def _names(values: Sequence[str], what: str) -> list[str]:
    if isinstance(values, str):
        raise ScaffoldError(f"{what}s must be a list of names, got the string {values!r}")
    names = list(values)
    if not names:
        raise ScaffoldError(f"at least one {what} is required")
    for name in names:
        try:
            check_label(name, f"{what} name")
        except ValueError as exc:
            raise ScaffoldError(str(exc)) from None
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ScaffoldError(f"{what} {duplicates[0]!r} is listed twice")
    return names


def render_policy(envs: Sequence[str]) -> str:
    """ferry.yaml for ENVS in promotion order: first from build, last gated and canaried."""
    blocks = []
    for index, env in enumerate(envs):
        if index == 0:
            name = "ferry-env-first.yaml.tmpl"
        elif index == len(envs) - 1:
            name = "ferry-env-last.yaml.tmpl"
        else:
            name = "ferry-env-middle.yaml.tmpl"
        source = envs[index - 1] if index else "build"
        blocks.append(_template(name).substitute(env=env, source=source))
    return _template("ferry.yaml.tmpl").substitute(environments="\n".join(blocks))


def _replicas(index: int, count: int) -> int:
    if index == 0:
        return 1
    return 3 if index == count - 1 else 2


def _elements(key: str, names: Sequence[str]) -> str:
    return "\n".join(f"                - {key}: {name}" for name in names)


def render_files(services: Sequence[str], envs: Sequence[str], registry: str) -> dict[str, str]:
    """Every scaffolded file, path -> content."""
    files = {"ferry.yaml": render_policy(envs)}
    for index, env in enumerate(envs):
        for service in services:
            files[f"envs/{env}/{service}/values.yaml"] = _template("values.yaml.tmpl").substitute(
                service=service,
                env=env,
                registry=registry,
                replicas=_replicas(index, len(envs)),
            )
    files["argocd/applicationset.yaml"] = _template("applicationset.yaml.tmpl").substitute(
        service_elements=_elements("service", services),
        env_elements=_elements("env", envs),
        gitops_repo=GITOPS_REPO_URL,
        chart_repo=CHART_REPO_URL,
    )
    files["README.md"] = _template("README.md.tmpl").substitute(
        services=", ".join(services),
        envs=", ".join(envs),
        arrow=" -> ".join(envs),
    )
    return files


def scaffold(
    path: Path,
    services: Sequence[str] | None = None,
    *,
    envs: Sequence[str] = DEFAULT_ENVS,
    registry: str = DEFAULT_REGISTRY,
) -> None:
    """Create a GitOps repository at PATH (a new or empty directory) and commit it on main."""
    path = Path(path)
    service_names = _names(DEFAULT_SERVICES if services is None else services, "service")
    env_names = _names(envs, "environment")
    registry = registry.rstrip("/")
    if not _REGISTRY.match(registry):
        raise ScaffoldError(
            f"registry must look like registry.example.com/team (lower case), got {registry!r}"
        )
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ScaffoldError(f"{path} already exists and is not empty: choose a new directory")

    files = render_files(service_names, env_names, registry)
    try:
        load_policy(files["ferry.yaml"])
    except PolicyError as exc:  # a bug in the templates, not in the caller's input
        raise ScaffoldError(f"generated ferry.yaml does not load: {exc}") from None

    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        git("init", "-q", "-b", "main", str(path))
        # Pushes to main (merged promotions) update this checkout too.
        git("config", "receive.denyCurrentBranch", "updateInstead", cwd=path)
        git("config", "core.autocrlf", "false", cwd=path)
        for relpath, content in files.items():
            target = path / relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content.encode("utf-8"))
        git("add", "--", *files, cwd=path)
        git(
            "-c",
            "commit.gpgsign=false",
            "commit",
            "-q",
            "--no-verify",
            "-m",
            COMMIT_MESSAGE,
            cwd=path,
        )
    except (GitError, OSError) as exc:
        if created:
            shutil.rmtree(path, ignore_errors=True)
        else:
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise ScaffoldError(f"could not scaffold {path}: {exc}") from None
