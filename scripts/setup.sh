#!/usr/bin/env bash
# Installs (idempotently) every Debian package the lambox tests and fixture
# builds need, and the little configuration they rely on.
#
# Safe to run repeatedly: it only calls apt-get when a package is missing, and
# `apt-get update` only when an install is actually needed.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

PACKAGES=(
  # image tooling
  skopeo umoci buildah podman runc uidmap
  # root filesystems
  busybox-static debootstrap debian-archive-keyring wget gpgv
  # loopback registry (CNCF distribution) + htpasswd for auth tests
  docker-registry apache2-utils
  # compression
  zstd pigz gzip xz-utils
  # rpm databases (the registry's scanner test builds one with rpmbuild and rpm, and a
  # Berkeley DB one with db_load)
  rpm db5.3-util
  # misc
  ca-certificates python3 python3-pip tar coreutils util-linux iproute2 curl
  # lambox run --network nat (the nft program) and its tests
  nftables
)

if [[ $(id -u) -ne 0 ]]; then
  die "must run as root (apt-get, debootstrap and chroot need it)"
fi

installed=" $(dpkg-query -W -f='${Package}=${db:Status-Status} ' "${PACKAGES[@]}" 2>/dev/null || true) "
missing=()
for p in "${PACKAGES[@]}"; do
  [[ $installed == *" $p=installed "* ]] || missing+=("$p")
done

APT=(apt-get -o DPkg::Lock::Timeout=600)
if ((${#missing[@]})); then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Without an init system, maintainer scripts could still start services
  # (docker-registry's init script would listen on :5000 on all interfaces).
  # Forbid that for the duration of the install if nothing else does.
  tmp_policy=
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    tmp_policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$tmp_policy"
    chmod +x "$tmp_policy"
    trap 'rm -f "$tmp_policy"' EXIT
  fi
  "${APT[@]}" update || die "apt-get update failed"
  "${APT[@]}" install -y --no-install-recommends "${missing[@]}" \
    || die "apt-get install failed for: ${missing[*]}"
  if [[ -n $tmp_policy ]]; then rm -f "$tmp_policy"; trap - EXIT; fi
else
  log "all ${#PACKAGES[@]} packages already installed"
fi

for tool in skopeo umoci buildah podman runc busybox debootstrap docker-registry zstd pigz htpasswd python3 nft rpm rpmbuild db5.3_load; do
  command -v "$tool" >/dev/null 2>&1 || [[ -x /usr/sbin/$tool || -x /sbin/$tool ]] \
    || die "'$tool' still not found after install"
done

# containers/image refuses to do anything without a signature policy; Debian's
# packages normally ship one, but make sure (never overwrite an existing one).
if [[ ! -e /etc/containers/policy.json ]]; then
  log "writing /etc/containers/policy.json (insecureAcceptAnything)"
  mkdir -p /etc/containers
  cat >/etc/containers/policy.json <<'JSON'
{
    "default": [
        {
            "type": "insecureAcceptAnything"
        }
    ]
}
JSON
fi

# podman/buildah configuration used by scripts/build-fixtures.sh. The hard
# nofile limit on these machines is 20000 and CAP_SYS_RESOURCE is absent, so
# podman's default ulimits (1048576) make every RUN fail. Storage goes into the
# fixture cache (vfs: works on any backing filesystem, nested or not).
CACHE=${1:-${LAMBOX_FIXTURES:-/var/cache/lambox-fixtures}}
mkdir -p "$CACHE/containers"
write_if_changed() { # FILE CONTENT
  if [[ ! -f $1 ]] || [[ $(cat "$1") != "$2" ]]; then
    printf '%s\n' "$2" >"$1"
  fi
}
write_if_changed "$CACHE/containers/containers.conf" '[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"'
write_if_changed "$CACHE/containers/storage.conf" "[storage]
driver = \"vfs\"
graphroot = \"$CACHE/containers/storage\"
runroot = \"$CACHE/containers/run\""

log "ok (containers config in $CACHE/containers; export CONTAINERS_CONF=$CACHE/containers/containers.conf CONTAINERS_STORAGE_CONF=$CACHE/containers/storage.conf to use it)"
