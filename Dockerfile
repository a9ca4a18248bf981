# The Anygle image: `twistd -n anygle` as a non-root user, configured through ANYGLE_* variables
# (every option of the README's table; docker-compose.yml sets the Redis engine).  Alone it runs
# the memory engine:  docker run -p 3000:3000 -p 3001:3001 anygle
#
# Two stages: the first builds the venv exactly as the README's quick start does
# (python3 -m venv + pip install .), the second carries only the venv and Debian's python3.

FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml setup.cfg README.md /src/
COPY anygle /src/anygle
COPY twisted /src/twisted
# The moderation prefilter (Hyperscan) takes seconds to compile, longer for replicas starting
# together: compile it now, into a cache the runtime user reads (a CPU that cannot load it
# compiles again at start).  Twisted's plugin cache is written now for the same reason.
ENV ANYGLE_HS_CACHE=/opt/anygle/hs-cache
RUN python3 -m venv /opt/anygle \
 && /opt/anygle/bin/pip install --no-cache-dir --disable-pip-version-check -q /src \
 && /opt/anygle/bin/pip uninstall -q -y pip setuptools \
 && /opt/anygle/bin/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
 && /opt/anygle/bin/python -c "from anygle.moderation import Classifier; Classifier()" \
 && chmod -R a+rX /opt/anygle

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/anygle --create-home --shell /usr/sbin/nologin anygle
COPY --from=build /opt/anygle /opt/anygle
ENV PATH=/opt/anygle/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ANYGLE_HS_CACHE=/opt/anygle/hs-cache \
    ANYGLE_WS=tcp:3001 \
    ANYGLE_HTTP=tcp:3000
USER anygle
WORKDIR /var/lib/anygle
EXPOSE 3001 3000
# /health answers 200, or 503 with the reason (Redis unreachable, draining).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:3000/health', timeout=2)"]
# SIGTERM drains: clients are told, chats end cleanly, within --shutdown-timeout (8 s) of the
# 10 s a container runtime waits before SIGKILL.
STOPSIGNAL SIGTERM
CMD ["twistd", "--nodaemon", "--pidfile=", "--logfile=-", "anygle"]
