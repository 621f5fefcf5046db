# Example image: NVIDIA Triton with dfrepo's repository agent as a drop-in replacement for
# dragonfly-repository-agent (same agent name "dragonfly", same config files and variables).
#
#   python -m build --wheel            # on a manylinux/glibc box with gcc; gives dist/dfrepo-*.whl
#   docker build --build-arg TRITON_VERSION=24.10 -t triton-dfrepo .
#   docker run --rm -p 8000:8000 -v $PWD/config:/home/triton \
#       -e TRITON_CLOUD_CREDENTIAL_PATH=/home/triton/cloud_credential.json triton-dfrepo \
#       tritonserver --model-repository=s3://minio:9000/models
#
# /home/triton/dragonfly_config.json and /home/triton/cloud_credential.json are read exactly
# like the C++ agent (see docs/triton-agent.md). Not built in CI: it needs a Docker engine.
ARG TRITON_VERSION=24.10
FROM nvcr.io/nvidia/tritonserver:${TRITON_VERSION}-py3

# The image's python3 (3.10 on 24.x, Ubuntu 22.04) runs the agent's worker process; a venv
# keeps dfrepo and the cloud SDKs away from the python backend's own packages.
ENV DFREPO_VENV=/opt/dfrepo
COPY dist/dfrepo-*.whl /tmp/wheels/
RUN python3 -m venv "$DFREPO_VENV" \
 && "$DFREPO_VENV/bin/pip" install --no-cache-dir "$(ls /tmp/wheels/dfrepo-*.whl)[all]" \
 && rm -rf /tmp/wheels \
 # Installs /opt/tritonserver/repoagents/dragonfly/libtritonrepoagent_dragonfly.so plus
 # dfrepo_agent.json, which records $DFREPO_VENV/bin/python for the shim.
 && "$DFREPO_VENV/bin/python" -c "from dfrepo.triton import install_agent; print(install_agent())"

# No ENV for the two config paths on purpose: the agent defaults to /home/triton/... and,
# unset, falls back to AWS_*/GOOGLE_*/AZURE_* when no file is mounted. Triton core reads a
# credential file only when TRITON_CLOUD_CREDENTIAL_PATH is set, so pass
# `-e TRITON_CLOUD_CREDENTIAL_PATH=/home/triton/cloud_credential.json` when you mount one.

EXPOSE 8000 8001 8002
