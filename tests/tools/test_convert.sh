#!/bin/sh
# tests/tools/test_convert.sh BUILD_DIR SOURCE_DIR — runs tests/golden/test_convert.py (scripts/nat_convert.py
# end to end) with the system's python3. PyTorch is optional for nat: without it the test reports
# SKIPPED (77), naming what is missing. scripts/test.sh installs Debian's python3-torch and python3-pil.
# The first interpreter that has torch: NAT_PYTHON, the python3 on PATH (which may be a pyenv or venv
# one), then Debian's /usr/bin/python3, where python3-torch installs.
tried=""
for py in ${NAT_PYTHON:-} python3 /usr/bin/python3; do
  command -v "$py" >/dev/null 2>&1 || continue
  if "$py" -c 'import torch' 2>/dev/null; then
    exec "$py" "$2/tests/golden/test_convert.py" "$1"
  fi
  tried="$tried $py"
done
echo "SKIPPED: no python3 that can import torch (tried:${tried:- none}; apt-get install python3-torch)"
exit 77
