# Sourced by scripts/vagrant-box, scripts/vagrant-test and scripts/image: where the
# offline builds keep their cache, the box name, how host tools get installed, and
# the two steps the box and the container image share (the project's wheels, a
# Debian root file system from the host's apt sources with cached .debs).
# Sets variables and defines functions only; runs nothing when sourced.

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Everything the lab builds or downloads lives here, so a second run is fast
# and `rm -rf` of this one directory forgets it all.
cache=${V6NAT_VAGRANT_CACHE:-/var/cache/v6nat-vagrant}
box_name=${V6NAT_BOX_NAME:-v6nat/bookworm-local}
export VAGRANT_HOME=${VAGRANT_HOME:-$cache/vagrant.d}
# Vagrant must not look for newer boxes or plugin versions: there is no network.
export VAGRANT_BOX_UPDATE_CHECK_DISABLE=1 VAGRANT_CHECKPOINT_DISABLE=1

step() { printf '\033[1m[%s]\033[0m %s\n' "$(basename "$0")" "$*"; }
die() { echo "$(basename "$0"): $*" >&2; exit 1; }

# ensure_host_packages PKG...: installs the Debian packages that are missing,
# with a policy-rc.d that keeps their post-install scripts from starting
# libvirtd, dnsmasq or dockerd in the root namespace.
ensure_host_packages() {
    local p missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    step "installing host packages: ${missing[*]}"
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" || {
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    } || rc=$?
    rm -f /usr/sbin/policy-rc.d
    return $rc
}

# Seconds since the script started, for the per-step timings it prints.
elapsed() { echo "$((SECONDS))s"; }

# download_wheels: the project's Python wheels (dependencies, test extras, pip,
# setuptools, wheel) into $cache/wheels, downloaded by Debian 12's /usr/bin/python3
# so binary wheels match the guests' and the image's Python. Kept for rebuilds.
download_wheels() {
    local python_requirements
    mkdir -p "$cache/wheels"
    mapfile -t python_requirements < <(/usr/bin/python3 - "$top/pyproject.toml" <<'EOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
for req in project["dependencies"] + [r for extra in project.get("optional-dependencies", {}).values() for r in extra]:
    print(req)
for req in ("setuptools>=66", "wheel", "pip"):
    print(req)
EOF
)
    [ -x "$cache/pip-venv/bin/pip" ] || /usr/bin/python3 -m venv "$cache/pip-venv"
    "$cache/pip-venv/bin/pip" download -q --dest "$cache/wheels" "${python_requirements[@]}"
}

# mmdebstrap_cached ARGS... TARGET: `mmdebstrap ARGS... bookworm TARGET SOURCES`
# from the host's own Debian sources (deb822 .sources or sources.list: the same
# mirror and snapshot as the host's packages), with the downloaded .debs kept in
# $cache/debs for the next build.
mmdebstrap_cached() {
    local target=${!#} sources=/etc/apt/sources.list.d/debian.sources
    [ -s "$sources" ] || sources=/etc/apt/sources.list
    mkdir -p "$cache/debs"
    mmdebstrap --skip=essential/unlink \
        --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
        --setup-hook="sync-in $cache/debs /var/cache/apt/archives/" \
        --customize-hook="sync-out /var/cache/apt/archives $cache/debs" \
        "${@:1:$#-1}" bookworm "$target" "$sources"
}
