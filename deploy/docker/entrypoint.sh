#!/bin/sh
# One image for plain Docker, Kubernetes, SageMaker and Vertex AI.
# SageMaker starts the container as `docker run IMAGE serve`, mounts the model at
# /opt/ml/model and expects port 8080 (/ping, /invocations). Vertex AI sets
# AIP_HTTP_PORT (read by tuneforge serve) and AIP_STORAGE_URI / a mounted model.
set -eu
if [ "${1:-}" = "serve" ] && [ "$#" -eq 1 ]; then
    exec tuneforge serve "${SM_MODEL_DIR:-/opt/ml/model}" --host 0.0.0.0 --port 8080
fi
exec "$@"
