#!/usr/bin/env bash
# Opens GET /docs in headless Chromium, with the network closed to everything but the service,
# and checks that Swagger UI rendered every operation: the page works offline (no CDN).
#
#   scripts/check-docs.sh            (builds the binary; installs Debian's chromium if missing)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
cargo build --quiet
bin=target/debug/usersync

out="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$out"' EXIT
"$bin" dev --listen 127.0.0.1:0 >"$out/banner" 2>"$out/log" &
pid=$!
for _ in $(seq 1 120); do
  grep -q "Ctrl-C stops" "$out/banner" 2>/dev/null && break
  sleep 0.5
done
url="$(sed -n 's/^export USERSYNC_URL=//p' "$out/banner")"
[ -n "$url" ] || { echo "usersync dev did not start:"; cat "$out/log"; exit 1; }

# --host-resolver-rules makes every other host unreachable: a CDN asset would fail to load.
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$out/profile" \
  --host-resolver-rules="MAP * ~NOTFOUND, EXCLUDE 127.0.0.1" \
  --virtual-time-budget=15000 --dump-dom "$url/docs/" >"$out/dom.html" 2>"$out/chromium.log"

# Every path the served document lists must appear as a rendered operation.
mapfile -t ops < <(curl -fsS "$url/openapi.json" \
  | python3 -c 'import json, sys; print("\n".join(json.load(sys.stdin)["paths"]))')
[ "${#ops[@]}" -gt 0 ] || { echo "the OpenAPI document lists no paths"; exit 1; }
missing=0
for op in "${ops[@]}"; do
  if grep -q "data-path=\"$op\"" "$out/dom.html"; then
    echo "rendered: $op"
  else
    echo "NOT rendered: $op"
    missing=1
  fi
done
[ "$missing" -eq 0 ] || { echo "the docs page did not render every operation"; exit 1; }
echo "docs page OK: every operation rendered offline"
