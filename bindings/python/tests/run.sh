#!/bin/sh
# Runs the Python package's tests (meson test --suite python). Uses the
# first python3 that has numpy and pytest: Debian's /usr/bin/python3 is
# the one scripts/bootstrap.sh provisions, and a python3 earlier on PATH
# (pyenv, a venv) may lack them. Without either, exit 77: skipped.
cd "$(dirname "$0")"
for python in python3 /usr/bin/python3; do
    if "$python" -c "import numpy, pytest" 2>/dev/null; then
        # No bytecode or pytest cache written into the source tree.
        PYTHONDONTWRITEBYTECODE=1 exec "$python" -m pytest -q -p no:cacheprovider \
            -o addopts="" "$@" .
    fi
done
echo "python3 with numpy and pytest not found (scripts/bootstrap.sh installs them): skipped"
exit 77
