#!/usr/bin/env bash
# Check the import contracts in pyproject.toml ([tool.importlinter]) with lint-imports.
# setuptools maps adapters/, db/ and flows/ into the tomoloop namespace with an import hook
# that grimp cannot walk, so they are linked into a temporary tomoloop/ put first on the path.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir "$root/tomoloop"
for part in adapters db flows; do ln -s "$PWD/$part" "$root/tomoloop/$part"; done
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" .venv/bin/lint-imports --no-cache
