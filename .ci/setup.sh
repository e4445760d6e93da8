#!/usr/bin/env bash
# Installs the package and its test dependencies on a fresh machine of this kind.
# The pinned CPU wheel of torch goes first so that the package's loose torch range
# is already satisfied and pip never pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
# The test extra includes the docs extra (mkdocs build in .ci/test) and mypy with the stubs it needs.
python -m pip install --quiet --disable-pip-version-check -e ".[test]"
# Headless Chromium for the gallery browser test (Debian package; skipped when already present).
bash .ci/install_chromium.sh
