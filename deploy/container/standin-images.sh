#!/usr/bin/env bash
# Local stand-ins for the three public images that Dockerfile and docker-compose.yml name
# (debian:bookworm-slim, redis:7, nginx), made from Debian's packages with mmdebstrap, for machines
# that cannot reach a container registry (ours).  Only for testing here: the files themselves stay
# what a Docker user runs, and an image that is already present (pulled or made) is left alone.
#
# Each stand-in keeps what our files rely on from the real image: redis:7 runs `redis-server` in
# /data; nginx reads /etc/nginx/conf.d/*.conf (no Debian default site), logs to stdout/stderr and
# stops on SIGQUIT; all three have /bin/sh and getent.  The host's extra CA certificates (a
# TLS-inspecting egress proxy) go into every stand-in, with PIP_CERT naming the bundle, so that
# apt and pip inside a build reach the outside as they do on the host.
set -euo pipefail

SUITE=${SUITE:-bookworm}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

slim=(
    --variant=minbase --quiet
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin'
)
cas=()
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cas=(
        --customize-hook='mkdir -p "$1"/usr/local/share/ca-certificates "$1"/etc/ssl/certs'
        --customize-hook='cp /usr/local/share/ca-certificates/*.crt "$1"/usr/local/share/ca-certificates/'
        --customize-hook='cp /etc/ssl/certs/ca-certificates.crt "$1"/etc/ssl/certs/ca-certificates.crt'
    )
fi

make() {  # make NAME "PACKAGES" EXTRA_HOOK PODMAN_IMPORT_CHANGES...
    local name=$1 packages=$2 hook=$3
    shift 3
    if podman image exists "$name"; then
        echo "standin-images: $name is present"
        return
    fi
    echo "standin-images: making $name from Debian $SUITE packages"
    local include=()
    [ -z "$packages" ] || include=(--include="$packages")
    mmdebstrap "${slim[@]}" "${cas[@]}" "${include[@]}" --customize-hook="$hook" \
        "$SUITE" "$work/rootfs.tar"
    local changes=(--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin')
    [ ${#cas[@]} -eq 0 ] || changes+=(--change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt')
    for c in "$@"; do changes+=(--change "$c"); done
    podman import --quiet "${changes[@]}" "$work/rootfs.tar" "$name" >/dev/null
    rm -f "$work/rootfs.tar"
}

make docker.io/library/debian:bookworm-slim "" 'true' 'CMD ["bash"]'
make docker.io/library/redis:7 redis-server 'mkdir -p "$1"/data' \
    'WORKDIR /data' 'EXPOSE 6379' 'CMD ["redis-server"]'
make docker.io/library/nginx nginx \
    'rm -f "$1"/etc/nginx/sites-enabled/default && ln -sf /dev/stdout "$1"/var/log/nginx/access.log && ln -sf /dev/stderr "$1"/var/log/nginx/error.log' \
    'EXPOSE 80' 'STOPSIGNAL SIGQUIT' 'CMD ["nginx", "-g", "daemon off;"]'
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'debian|redis|nginx' || true
