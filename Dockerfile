# syntax=docker/dockerfile:1
#
# gateway container image.
#
#   docker build -t gateway:0.1.0 .
#   docker run --rm -p 8080:8080 -p 9090:9090 \
#     -v "$PWD/config.yaml:/etc/gateway/config.yaml:ro" gateway:0.1.0
#
# The configuration is read from /etc/gateway/config.yaml (mount it; none is baked in). The image
# expects `server.listen: "0.0.0.0:8080"` and `server.admin_listen: "0.0.0.0:9090"` (or
# "127.0.0.1:9090" when nothing outside the container probes it): the HEALTHCHECK below asks
# http://127.0.0.1:9090/healthz. Without admin_listen, set
# GATEWAY_HEALTHCHECK_URL=http://127.0.0.1:8080/.gateway/healthz. Writable state (a generated
# signing key when tokens.signing_keys is empty) belongs in server.data_dir: /var/lib/gateway.
# See docs/deployment.md.

# --- builder: wheels of the project and of every dependency -------------------------------------
# The full image of the same Python and Debian release as the final one: it has the C compiler
# that mypyc needs to compile the request path (GATEWAY_COMPILE=1, see gateway_build/).
FROM python:3.11-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_COMPILE=1

WORKDIR /src
# LICENSE goes into the wheel's metadata; gateway/config.example.yaml (package data, for
# `gateway demo`) links to the file at the root. setup.py and gateway_build/ build the wheel.
COPY pyproject.toml setup.py README.md LICENSE config.example.yaml ./
COPY gateway_build ./gateway_build
COPY gateway ./gateway
# Every dependency has binary wheels for CPython 3.11 on amd64 and arm64; the project's own
# wheel is compiled here. The final stage installs these wheels only, offline.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- final: the same slim base, the wheels, nothing else ----------------------------------------
FROM python:3.11-slim-bookworm

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="gateway" \
      org.opencontainers.image.description="Authentication reverse proxy: login, sessions, per-route access rules and signed JWTs for upstream apps" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GATEWAY_CONFIG=/etc/gateway/config.yaml \
    GATEWAY_HEALTHCHECK_URL=http://127.0.0.1:9090/healthz

# A fixed, numeric, unprivileged user: Kubernetes' runAsNonRoot can verify it, and file ownership
# on volumes is predictable (runAsUser/fsGroup 10001 in deploy/).
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /var/lib/gateway --shell /usr/sbin/nologin gateway \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/gateway \
    && install -d -m 0755 /etc/gateway

# The wheels are bind-mounted from the builder, so they never become a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/gateway-*.whl

WORKDIR /var/lib/gateway
VOLUME ["/var/lib/gateway"]
USER 10001:10001
EXPOSE 8080 9090

HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['GATEWAY_HEALTHCHECK_URL'], timeout=4)"]

ENTRYPOINT ["gateway"]
CMD ["run", "-c", "/etc/gateway/config.yaml"]
