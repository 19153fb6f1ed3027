# The v6nat container image, for machines with a registry: `docker build -t v6nat .`
# `make image` (scripts/image) builds the same image offline from Debian's packages with mmdebstrap
# and `docker import`s it; it reads ENV, ENTRYPOINT and CMD from this file, so both images start
# alike. Run it as contrib/compose/docker-compose.yml does (docs/install.md): host network, only
# CAP_NET_ADMIN and CAP_SYS_ADMIN, the host's kernel headers, bpffs and cgroup v2 mounted.

# Build stage: a venv that sees Debian's bcc, with v6nat installed as a wheel (not editable).
FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md /src/
COPY v6nat_ebpf /src/v6nat_ebpf
COPY bpf /src/bpf
RUN python3 -m venv --system-site-packages /opt/v6nat \
 && /opt/v6nat/bin/pip install --no-cache-dir /src \
 && /opt/v6nat/bin/pip uninstall -y -q pip setuptools

# Run stage: Debian 12 with its bcc (python3-bpfcc, LLVM), libbpf and iproute2 (`v6nat check`
# tries tc), no docs, no compiler toolchain, no test tools. Kernel headers come from the host.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-bpfcc libbpf1 iproute2 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/v6nat /opt/v6nat

# Settings are the V6NAT_* variables of packaging/v6nat.default (`v6nat run --help`), set in the
# compose file. These three only say where the image expects the host's mounts: bpffs (pins) and
# cgroup v2 (host-local access) under /host, outside /sys, where Docker's AppArmor profile
# (docker-default) denies every write below /sys/fs/ but cgroup.
ENV PATH=/opt/v6nat/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENV V6NAT_PIN_PATH=/host/sys/fs/bpf/v6nat
ENV V6NAT_CGROUP_PATH=/host/sys/fs/cgroup
ENTRYPOINT ["v6nat"]
CMD ["run"]
