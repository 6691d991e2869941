#!/usr/bin/env bash
# The unit suite on Python 3.13 (Qubes 4.3's dom0 and newer templates) in a second venv,
# `.venv313`, beside the project's 3.11 one. Extra arguments go to pytest.
# The interpreter: $PYTHON313, else pyenv's 3.13.0, else python3.13 on PATH (the first that runs).
set -euo pipefail
cd "$(dirname "$0")/.."

python313=
for candidate in ${PYTHON313:-} "$HOME/.pyenv/versions/3.13.0/bin/python3.13" python3.13; do
  if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
    python313=$candidate
    break
  fi
done
if [ -z "$python313" ]; then
  echo "test_py313: no working Python 3.13 (set PYTHON313 to one)" >&2
  exit 1
fi

if [ ! -x .venv313/bin/python ]; then
  "$python313" -m venv .venv313
fi
# 3.13's venv carries no setuptools; the editable install's backend needs it.
.venv313/bin/python -m pip install -q --upgrade pip setuptools >/dev/null
.venv313/bin/python -m pip install -q -e ".[test]"
# Debian's python3-nftables (scripts/install.sh installs it) for the agent, and only it:
# a directory holding one link to the package, named by a .pth file, as install.sh does.
site=$(.venv313/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p .venv313/system-packages
ln -sfn /usr/lib/python3/dist-packages/nftables .venv313/system-packages/nftables
echo "$PWD/.venv313/system-packages" > "$site/debian-nftables.pth"
exec .venv313/bin/python -m pytest -q -m "not lab" -p no:cacheprovider "$@"
