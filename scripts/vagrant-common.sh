# Sourced by scripts/vagrant-box and scripts/vagrant-test: where the offline
# Vagrant lab keeps its cache, the box name, and how host tools get installed.
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
