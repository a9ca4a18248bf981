#!/bin/sh
# The nginx service's command: nginx in the foreground, reloaded whenever the addresses behind
# the name `anygle` change, since nginx resolves an upstream's name only when it (re)loads.
# Reading them through getent (the C library's resolver) asks the compose network's DNS server
# first, as nginx's own start-up does; nginx's `resolver` directive would spread lookups over
# every nameserver in resolv.conf, the host's too, which does not know `anygle`.
set -eu

addresses() {
    getent ahosts anygle 2>/dev/null | awk '{ print $1 }' | sort -u | tr '\n' ' ' || true
}

# nginx refuses to start while an upstream's name does not resolve or the certificate is missing
# (the tls service writes one on a first start)
until [ -n "$(addresses)" ] && [ -s /etc/nginx/tls/fullchain.pem ]; do sleep 1; done
seen=$(addresses)
nginx -g 'daemon off;' &
pid=$!
trap 'kill -QUIT "$pid" 2>/dev/null' QUIT
trap 'kill -TERM "$pid" 2>/dev/null' TERM INT

while kill -0 "$pid" 2>/dev/null; do
    sleep 2 &
    wait $! || true
    now=$(addresses)
    if [ -n "$now" ] && [ "$now" != "$seen" ]; then
        echo "anygle replicas now at: $now; reloading nginx" >&2
        nginx -s reload || true
        seen=$now
    fi
done
wait "$pid"
