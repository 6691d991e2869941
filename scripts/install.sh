#!/usr/bin/env bash
# Everything the demo, the tests and the lab need on a fresh Debian machine (run as root).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(nftables iproute2 conntrack socat curl iperf3 wireguard-go wireguard-tools
          natpmpc miniupnpc miniupnpd-nftables procps python3-venv
          # Qt (PySide6 wheels) on the offscreen platform: GL/EGL, fonts, xkb, glib, dbus.
          libegl1 libgl1 libfontconfig1 fonts-dejavu-core libxkbcommon0 libglib2.0-0
          libdbus-1-3
          # Real QubesDB built from the pinned sources; unshare/nsenter/mount for its namespaces.
          gcc make pkg-config libc6-dev python3-dev util-linux mount)
# `make packages`: rpmbuild and rpm2archive (Debian's rpm); dpkg-deb comes with dpkg.
# tests/packaging: systemd-analyze verify and systemctl --root on the packaged units.
packages+=(rpm systemd)
# The agent's in-process nftables (libnftables through its Python module; see below).
packages+=(python3-nftables)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# A project venv: Debian's python refuses system-wide pip installs (PEP 668).
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# Extras: test by default; `make bench` asks for test,bench.
.venv/bin/python -m pip install -q -e ".[${EXTRAS:-test}]"

# libnftables' Python module (the agent applies and lists rules in-process) comes only as
# Debian's python3-nftables: pure Python over ctypes to libnftables.so.1, the same version
# as `nft`. The venv sees just that package, not all of Debian's dist-packages: a directory
# holding one link to it, named by a .pth file. scripts/test_py313.sh does the same.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p .venv/system-packages
ln -sfn /usr/lib/python3/dist-packages/nftables .venv/system-packages/nftables
echo "$PWD/.venv/system-packages" > "$site/debian-nftables.pth"
.venv/bin/python -c 'import nftables' || { echo "install: the venv cannot import nftables" >&2; exit 1; }
