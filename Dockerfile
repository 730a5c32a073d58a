# papr-emu container image: the gRPC server on 0.0.0.0:50051, run as a non-root user (10001).
#
#   docker build -t papr-emu .
#   docker run --rm -p 50051:50051 -v "$PWD/secrets:/etc/papr-emu:ro" papr-emu
#   docker run --rm -p 50051:50051 papr-emu serve --listen 0.0.0.0:50051 --insecure   # throwaway, local
#
# `serve` takes TLS and the admin token from /etc/papr-emu (container/entrypoint.sh): tls.crt
# and tls.key, client-ca.pem (mTLS), admin.token (or PAPR_EMU_ADMIN_TOKEN); readable by uid
# 10001. Without TLS and tokens the server refuses 0.0.0.0 with a one-line error, unless
# --insecure. The HEALTHCHECK (container/healthcheck.py) reads the same files.
#
# BASE is any Debian-based image with Python 3.11+ and its venv module: the official
# slim images (python3 in /usr/local) or Debian's own python3 + python3-venv (python3
# in /usr/bin). Both stages must use the same BASE: the venv points at its interpreter.
# The build stage installs gcc and the Python headers with apt only if BASE lacks them
# (pylibfdt builds from source).
#
# Behind a TLS-intercepting proxy, hand the build its CA bundle for pip:
#   --secret id=ca-certificates,src=/etc/ssl/certs/ca-certificates.crt
# Podman: build with --format docker, or the HEALTHCHECK is dropped (OCI images have none).
ARG BASE=python:3.12-slim

FROM ${BASE} AS build
SHELL ["/bin/sh", "-eux", "-c"]
# hadolint ignore=DL3008,SC2086
RUN need=""; \
    command -v gcc >/dev/null || need="gcc libc6-dev"; \
    python3 -c 'import pathlib, sys, sysconfig; sys.exit(not pathlib.Path(sysconfig.get_paths()["include"], "Python.h").is_file())' \
        || need="$need python3-dev"; \
    python3 -c 'import ensurepip, venv' 2>/dev/null || need="$need python3-venv"; \
    if [ -n "$need" ]; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need; \
        rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /src
COPY . .
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN --mount=type=secret,id=ca-certificates \
    if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi; \
    python3 -m venv /opt/papr-emu; \
    /opt/papr-emu/bin/pip install /src; \
    /opt/papr-emu/bin/papr-emu --version; \
    /opt/papr-emu/bin/papr-emu conformance list >/dev/null

FROM ${BASE} AS runtime
LABEL org.opencontainers.image.title="papr-emu" \
      org.opencontainers.image.description="PAPR/RTAS Dynamic Reconfiguration Connector platform emulator, driven over gRPC" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 papr \
    && useradd --uid 10001 --gid papr --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin papr
COPY --from=build /opt/papr-emu /opt/papr-emu
ENV PATH=/opt/papr-emu/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PAPR_EMU_HEALTH_TARGET=127.0.0.1:50051
COPY container/entrypoint.sh container/healthcheck.py /usr/local/lib/papr-emu/
USER 10001:10001
EXPOSE 50051
# The standard gRPC health service (no token needed), over TLS when /etc/papr-emu/tls.crt is
# there (with healthcheck.crt and .key under mTLS); PAPR_EMU_HEALTH_TARGET follows a --listen
# other than the default. See container/healthcheck.py.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "/usr/local/lib/papr-emu/healthcheck.py"]
ENTRYPOINT ["/bin/sh", "/usr/local/lib/papr-emu/entrypoint.sh"]
CMD ["serve", "--listen", "0.0.0.0:50051", "--log-format", "json"]
