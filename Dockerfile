# One image for all four workers: `docker run IMAGE worker pr-writer`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# git: workers clone, commit and push to the GitOps repository. safe.directory: a mounted
# repository is often owned by another uid, and git would refuse to touch it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/* \
 && git config --system --add safe.directory '*'

# Only what the package needs (there is no .dockerignore: this keeps .venv and caches out).
COPY pyproject.toml README.md /src/
COPY shared /src/shared
COPY services /src/services
RUN pip install /src && rm -rf /src

# A fixed numeric uid so Kubernetes' runAsNonRoot can verify it. /gitops is created here so
# that a named volume mounted there (docker-compose.yml) starts out owned by this user.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/ferry --create-home ferry \
 && install -d -o ferry -g ferry /gitops
USER 10001:10001
ENV HOME=/var/lib/ferry FERRY_HOME=/var/lib/ferry
WORKDIR /var/lib/ferry

ENTRYPOINT ["ferry"]
CMD ["--help"]
