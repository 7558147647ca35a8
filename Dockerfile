# The one image of smll-secrets: `python -m webhook` or `python -m controller`, chosen by the chart's args.
#
# Build it with
#   docker build -t ghcr.io/smll-io/smll-secrets:0.1.0 .
# The local environment builds it with buildah on a base made from Debian packages (devenv/images.py), because no
# upstream image registry is reachable there: the base is a build argument, its default the usual upstream image.
# Every dependency installs from a binary wheel (aiohttp, asyncpg, orjson, cryptography, bcrypt ship manylinux
# wheels), so neither stage needs a compiler.
#
# Pin the base by digest where the image is built for release, e.g.
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest from `docker buildx imagetools inspect`>
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rules rules
COPY kubeio kubeio
COPY webhook webhook
COPY controller controller
# devenv (the local control plane) is part of the source tree but never of the image: it is not copied.
RUN /opt/venv/bin/pip install --prefer-binary --no-compile . \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib/python3.11/site-packages

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="smll-secrets" \
      org.opencontainers.image.description="Kubernetes-native secrets: admission webhooks and controller" \
      org.opencontainers.image.source="https://github.com/smll-io/smll-secrets"
RUN groupadd --system --gid 10001 smll && useradd --system --uid 10001 --gid smll --no-create-home smll
COPY --from=build /opt/venv /opt/venv
# The chart mounts a read-only root filesystem: no bytecode is written at run time (it was compiled above).
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["python", "-m"]
CMD ["webhook", "--help"]
