#!/usr/bin/env bash
# The registry tests run against a real PostgreSQL server that the test session starts
# itself (initdb + pg_ctl in a temp folder). This makes sure the server programs exist.
set -euo pipefail
if command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "PostgreSQL server programs (initdb, pg_ctl) are missing: install them, e.g." \
       "'sudo apt-get install postgresql'" >&2
  exit 1
fi
echo "tomoloop: installing the PostgreSQL server for the registry tests..." >&2
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
