# Asterisk 22 from Debian sid's packages, with the project's configuration (asterisk/etc),
# rendered at start by asterisk/run-asterisk.sh exactly as for development and the tests.
# Build from the repository root:
#   docker build -f docker/asterisk.Dockerfile -t keypress-asterisk .
# ARI listens on 0.0.0.0:8088 inside the container (user keypress, password keypress-secret:
# asterisk/etc/ari.conf); publish it on 127.0.0.1 only. SIP stays on the container's own
# loopback (asterisk/etc/pjsip.conf): calls come in through Local channels over ARI.
FROM debian:sid-slim

# No service may start during the install (there is no init in the image anyway).
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        asterisk asterisk-modules asterisk-core-sounds-en-gsm asterisk-moh-opsound-gsm \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc /usr/share/man /usr/sbin/policy-rc.d

COPY asterisk/run-asterisk.sh /opt/keypress-asterisk/run-asterisk.sh
COPY asterisk/etc /opt/keypress-asterisk/etc
# RUNDIR: the rendered configuration, control socket, logs, spool, astdb.
RUN mkdir -p /var/lib/keypress-asterisk \
 && chown asterisk:asterisk /var/lib/keypress-asterisk

USER asterisk
WORKDIR /var/lib/keypress-asterisk
# run-asterisk.sh's --http-bind default: reachable over the container network.
ENV KEYPRESS_ASTERISK_HTTP_BIND=0.0.0.0
EXPOSE 8088
HEALTHCHECK --interval=5s --timeout=5s --start-period=10s --retries=6 \
    CMD ["asterisk", "-C", "/var/lib/keypress-asterisk/etc/asterisk.conf", "-rx", "core waitfullybooted"]

# run-asterisk.sh execs Asterisk: it is the container's main process (SIGTERM stops it).
# Extra arguments go to run-asterisk.sh (e.g. --http-port 8090).
ENTRYPOINT ["/opt/keypress-asterisk/run-asterisk.sh", "/var/lib/keypress-asterisk"]
CMD []
