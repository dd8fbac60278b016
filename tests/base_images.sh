#!/usr/bin/env bash
# Makes the local base images the buildpack fixtures build on (containers here cannot pull):
#   berth-test/busybox:latest  a static busybox (sh, httpd, ...), 2 MB
#   berth-test/langs:bookworm  Debian bookworm minbase with python3 (+venv), nodejs + npm,
#                              golang-go, ruby + bundler, rustc + cargo (debootstrap, then apt
#                              inside the chroot; several minutes, once: skipped when present)
#   berth-test/debian-systemd:bookworm  a bare Debian 12 with systemd as its init (no Docker,
#                              no git): the fresh host of tests/systemd.rs (under a minute, once)
# Idempotent. Run by tests/run.sh and bench/buildpacks.sh.
set -euo pipefail

if ! docker image inspect berth-test/busybox:latest >/dev/null 2>&1; then
  command -v busybox >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null; }
  echo "-----> Making the local base image berth-test/busybox:latest"
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/www" "$root/tmp"
  cp "$(command -v busybox)" "$root/bin/busybox"
  for tool in sh httpd cat echo sleep ls mkdir rm cp env nc true false printf touch wget; do ln -s busybox "$root/bin/$tool"; done
  tar -C "$root" -c . | docker import -c 'CMD ["/bin/sh"]' - berth-test/busybox:latest >/dev/null
  rm -rf "$root"
fi

if ! docker image inspect berth-test/langs:bookworm >/dev/null 2>&1; then
  echo "-----> Making the local base image berth-test/langs:bookworm (debootstrap; a few minutes, once)"
  command -v debootstrap >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  rootfs=$(mktemp -d /var/tmp/berth-langs.XXXXXX)
  trap 'umount "$rootfs/proc" 2>/dev/null || true; rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  mount -t proc proc "$rootfs/proc"
  chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    nodejs npm golang-go ruby ruby-bundler rustc cargo >/dev/null
  chroot "$rootfs" apt-get clean
  umount "$rootfs/proc"
  rm -rf "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - berth-test/langs:bookworm >/dev/null
fi

# A fresh Debian 12 host with systemd as its init and nothing else: no Docker, no git, no
# berth. The systemd tests boot it as PID 1 (tests/common/systemd.rs) and run install.sh in it.
if ! docker image inspect berth-test/debian-systemd:bookworm >/dev/null 2>&1; then
  echo "-----> Making the local base image berth-test/debian-systemd:bookworm (debootstrap; a few minutes, once)"
  command -v debootstrap >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  rootfs=$(mktemp -d /var/tmp/berth-systemd.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,iproute2,procps,ca-certificates \
    bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/*
  # What a container cannot do (or must not: the host's consoles and clock are not its own).
  for unit in getty@tty1.service console-getty.service systemd-timesyncd.service; do
    chroot "$rootfs" systemctl mask "$unit" >/dev/null 2>&1 || true
  done
  echo berth-host >"$rootfs/etc/hostname"
  tar -C "$rootfs" -c . | docker import \
    -c 'ENV container=docker' -c 'CMD ["/lib/systemd/systemd"]' \
    - berth-test/debian-systemd:bookworm >/dev/null
  rm -rf "$rootfs"
fi

# A swarm node: the same fresh Debian with the Docker engine installed (Debian's docker.io and
# iptables), so that three of them make a real multi-node swarm (tests/cluster.rs: berth is
# installed on the manager by install.sh, the workers only join). Made from the systemd image.
if ! docker image inspect berth-test/swarm-node:bookworm >/dev/null 2>&1; then
  echo "-----> Making the local base image berth-test/swarm-node:bookworm (apt inside; a few minutes, once)"
  builder=$(docker run -d berth-test/debian-systemd:bookworm sleep infinity)
  trap 'docker rm -f "$builder" >/dev/null 2>&1 || true' EXIT
  docker exec "$builder" bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io iptables curl >/dev/null && apt-get clean && rm -rf /var/lib/apt/lists/*'
  docker commit -c 'CMD ["/lib/systemd/systemd"]' "$builder" berth-test/swarm-node:bookworm >/dev/null
  docker rm -f "$builder" >/dev/null
fi
