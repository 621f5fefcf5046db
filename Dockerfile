# Example image: NVIDIA Triton with dfrepo's repository agent as a drop-in replacement for
# dragonfly-repository-agent (same agent name "dragonfly", same config files and variables).
#
#   docker build --build-arg TRITON_VERSION=24.10 -t triton-dfrepo .
#   docker run --rm -p 8000:8000 -v $PWD/config:/home/triton \
#       -e TRITON_CLOUD_CREDENTIAL_PATH=/home/triton/cloud_credential.json triton-dfrepo \
#       tritonserver --model-repository=s3://minio:9000/models
#
# The wheel is built inside the image it is installed into: dfrepo's wheel is compiled (the
# Cython core and the agent shim), so it installs only on the Python it was built for (3.10 in
# the Ubuntu 22.04 based images 23.08-24.12, 3.12 in the Ubuntu 24.04 based 25.xx) and links
# against that image's glibc. Both stages use the same TRITON_VERSION.
#
# /home/triton/dragonfly_config.json and /home/triton/cloud_credential.json are read exactly
# like the C++ agent (see docs/triton-agent.md). Not built in CI: it needs a Docker engine;
# tests/test_agent_portability.py checks its structure.
ARG TRITON_VERSION=24.10

# ---- build: the wheel, with the image's own python3 and glibc -------------------------------
FROM nvcr.io/nvidia/tritonserver:${TRITON_VERSION}-py3 AS build
# gcc + libc headers for the shim, Python.h for the Cython core; pip fetches the build
# requirements (setuptools, Cython, wheel) of pyproject.toml into an isolated environment.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev python3-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY src/ src/
RUN python3 -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && ls /wheels/dfrepo-*.whl

# ---- the image: Triton + dfrepo in its own venv + the agent ---------------------------------
FROM nvcr.io/nvidia/tritonserver:${TRITON_VERSION}-py3

# The image's python3 runs the agent's worker process; a venv keeps dfrepo and the cloud SDKs
# away from the python backend's own packages.
# The images carry python3 and pip for the python backend, not python3-venv (ensurepip).
ENV DFREPO_VENV=/opt/dfrepo
COPY --from=build /wheels/ /tmp/wheels/
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv "$DFREPO_VENV" \
 && "$DFREPO_VENV/bin/pip" install --no-cache-dir "$(ls /tmp/wheels/dfrepo-*.whl)[all]" \
 && rm -rf /tmp/wheels \
 # Installs /opt/tritonserver/repoagents/dragonfly/libtritonrepoagent_dragonfly.so plus
 # dfrepo_agent.json, which records $DFREPO_VENV/bin/python for the shim.
 && "$DFREPO_VENV/bin/dfrepo" install-agent

# No ENV for the two config paths on purpose: the agent defaults to /home/triton/... and,
# unset, falls back to AWS_*/GOOGLE_*/AZURE_* when no file is mounted. Triton core reads a
# credential file only when TRITON_CLOUD_CREDENTIAL_PATH is set, so pass
# `-e TRITON_CLOUD_CREDENTIAL_PATH=/home/triton/cloud_credential.json` when you mount one.

EXPOSE 8000 8001 8002
