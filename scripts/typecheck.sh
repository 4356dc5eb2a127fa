#!/usr/bin/env bash
# Type-check core and the service layer with mypy ([tool.mypy] in pyproject.toml).
# setuptools maps platform/ to `tomoloop` (and adapters/, db/, flows/ into it) with an import
# hook mypy cannot follow, so the mapping is rebuilt as symlinks under .mypy_cache/src/ (a
# stable path, so mypy's incremental cache stays valid) and the paths in mypy's messages are
# turned back into the repository's own.
set -euo pipefail
cd "$(dirname "$0")/.."
src=.mypy_cache/src
rm -rf "$src"
mkdir -p "$src/tomoloop"
for entry in platform/*; do
  case $entry in *__pycache__) continue ;; esac
  ln -s "$PWD/$entry" "$src/tomoloop/${entry#platform/}"
done
for part in adapters db flows; do ln -s "$PWD/$part" "$src/tomoloop/$part"; done
packages=()
for name in stacks labels coco networks training inference active particles metrics report \
  services errors paths names outputs checkpoints scratch processes lazy gc terminal lifeline; do
  packages+=(-p "tomoloop.$name")
done
status=0
MYPYPATH="$src" .venv/bin/python -m mypy "${packages[@]}" >"$src/report" 2>&1 || status=$?
sed -e "s#^$src/tomoloop/\(adapters\|db\|flows\)/#\1/#" -e "s#^$src/tomoloop/#platform/#" \
  "$src/report"
exit "$status"
