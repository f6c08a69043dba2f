# tprosshy in a container. The usual use is gateway mode: the host routes a LAN, and
# tprosshy sends the LAN's chosen flows through its SSH tunnels. (With --network host,
# local mode works too and redirects the host's own traffic.)
#
#   docker build -t tprosshy .
#   docker run -d --name tprosshy --network host --cap-add NET_ADMIN \
#     -v /etc/tprosshy:/etc/tprosshy:ro \
#     -v /root/.ssh-tprosshy:/root/.ssh:ro \
#     tprosshy
#
# --network host: the ruleset must go into the host's network namespace, where the LAN's
# traffic is routed. --cap-add NET_ADMIN: tprosshy installs that ruleset (exit 77 without).
# /etc/tprosshy holds config.yaml (mode: gateway, gateway.interfaces: the LAN side); the
# ssh volume holds the keys, a known_hosts that already knows every server (ssh runs with
# BatchMode=yes and never skips host-key checks) and, if wanted, a config; ssh runs as
# root, so the files must be owned by root and not writable by others.
# Arguments after the image name replace CMD (the entrypoint is tprosshy):
#   docker run --rm -v /etc/tprosshy:/etc/tprosshy:ro tprosshy check -c /etc/tprosshy/config.yaml
# validates the config and prints the ruleset; `... tprosshy -v -c FILE` logs more.
# `docker stop` sends SIGTERM: tprosshy removes its table and stops ssh. Even on SIGKILL the
# kernel drops the table (it is owned by tprosshy's netlink socket).
#
# Every RUN below is plain shell so scripts/container-check can run the same steps outside
# Docker (no engine runs on the build machines).

FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libboost1.81-dev libyaml-cpp-dev libspdlog-dev libfmt-dev libnftnl-dev libmnl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -G Ninja -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release \
 && cmake --build build \
 && build/tprosshy --version \
 && cmake --install build --prefix /usr/local --strip

FROM debian:bookworm-slim
# tini is PID 1: it forwards SIGTERM to tprosshy and reaps any orphan (an ssh ProxyCommand,
# for instance) that would otherwise stay a zombie.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      openssh-client tini \
      libyaml-cpp0.7 libspdlog1.10 libfmt9 libnftnl11 libmnl0 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/tprosshy /usr/local/bin/tprosshy
VOLUME ["/etc/tprosshy", "/root/.ssh"]
# No HEALTHCHECK: tprosshy's health is its tunnels, which only its log can tell; it exits
# (69) if none comes up at start-up, unless on_start_failure is retry.
ENTRYPOINT ["/usr/bin/tini", "--", "tprosshy"]
CMD ["-c", "/etc/tprosshy/config.yaml"]
