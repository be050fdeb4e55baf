#!/bin/sh
# tests/tools/test_convert.sh BUILD_DIR SOURCE_DIR — runs tests/golden/test_convert.py (scripts/nat_convert.py
# end to end) with the system's python3. PyTorch is optional for nat: without it the test reports
# SKIPPED (77), naming what is missing. scripts/test.sh installs Debian's python3-torch and python3-pil.
py=${NAT_PYTHON:-python3}
if ! command -v "$py" >/dev/null 2>&1; then
  echo "SKIPPED: $py not found (apt-get install python3 python3-torch)"; exit 77
fi
if ! "$py" -c 'import torch' 2>/dev/null; then
  echo "SKIPPED: $py cannot import torch (apt-get install python3-torch)"; exit 77
fi
exec "$py" "$2/tests/golden/test_convert.py" "$1"
