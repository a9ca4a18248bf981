#!/usr/bin/env bash
# The container deployment, tested for real: stand-ins for the public base images when they are
# missing (deploy/container/standin-images.sh), then deploy/container/test_compose.py, which
# builds the image, starts docker-compose.yml with three replicas under podman-compose, and takes
# it down again.  Needs root (rootful podman) and what .ci/install installs.
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$SECONDS
bash deploy/container/standin-images.sh
.venv/bin/python -m pytest -p no:cacheprovider -s -q deploy/container/test_compose.py "$@"
echo "deploy/container/test.sh: $((SECONDS - started)) s"
