#!/usr/bin/env bash
# Refreshes `.sqlx/`, the data sqlx's compile-time checked macros (`query!`, `query_as!`) read
# in offline builds, from a fresh database migrated by usersync itself; with `--check`, fails
# when the committed data no longer matches the queries or the schema (what CI runs).
#
# Usage:  scripts/sqlx-prepare.sh            (DATABASE_URL names the server; a superuser)
#         scripts/sqlx-prepare.sh --check
#
# Needs sqlx-cli: cargo install sqlx-cli --version 0.8.6 --locked --no-default-features \
#                   --features postgres,rustls
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SERVER_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
DB="usersync_sqlx_prepare_$$"
URL="${SERVER_URL%/*}/$DB"
check=()
case "${1:-}" in
  --check) check=(--check) ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac
command -v sqlx >/dev/null || { echo "needs sqlx-cli (see the header of $0)" >&2; exit 2; }

cleanup() { psql "$SERVER_URL" -X -q -c "drop database if exists $DB with (force)" >/dev/null 2>&1 || true; }
trap cleanup EXIT
psql "$SERVER_URL" -X -q -c "create database $DB"
# The schema as `usersync migrate` makes it (db::migrate: the migrations run with the usersync
# schema first on the search_path, where sqlx keeps its bookkeeping table), without building
# usersync, whose offline build needs the data this refreshes.
psql "$URL" -X -q -c "create schema usersync"
sqlx migrate run --source migrations --database-url "$URL?options=-csearch_path%3Dusersync" >/dev/null
DATABASE_URL="$URL" SQLX_OFFLINE=false cargo sqlx prepare "${check[@]}" -- --all-targets --locked
