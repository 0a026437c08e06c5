#!/usr/bin/env bash
# Checks what deploy/ ships, without a cluster, Prometheus or Grafana:
#
#   1. deploy/prometheus/alerts.yml: `promtool check rules`, then its unit tests
#      (`promtool test rules deploy/prometheus/alerts_test.yml`);
#   2. deploy/grafana/usersync.json: valid JSON, and every query names only metrics usersync
#      exports (scripts/check-grafana.py, against the README's Observability table, which
#      tests/api/observability.rs checks against a scrape of the real binary);
#   3. deploy/kubernetes/*.yaml: kubernetes-validate --strict against the Kubernetes schemas.
#
# Needs promtool (Debian: apt-get install --no-install-recommends prometheus) and python3 with
# venv; installs kubernetes-validate from PyPI into a virtualenv on first use.
#
#   CHECK_DEPLOY_VENV      where kubernetes-validate is installed (default target/deploy-venv)
#   KUBERNETES_VERSION     the schemas to validate against (default 1.33.0)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV="${CHECK_DEPLOY_VENV:-target/deploy-venv}"
KUBERNETES_VERSION="${KUBERNETES_VERSION:-1.33.0}"
KUBERNETES_VALIDATE_VERSION="1.37.0"

step() { printf '\n==> %s\n' "$*"; }

if ! command -v promtool >/dev/null 2>&1; then
  echo "error: promtool not found; install it (Debian: apt-get install --no-install-recommends prometheus)" >&2
  exit 1
fi

step "promtool: alerting rules and their unit tests"
promtool --version 2>&1 | head -1
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml

step "Grafana dashboard: valid JSON, every query over usersync's metrics"
python3 scripts/check-grafana.py deploy/grafana/usersync.json README.md

step "kubernetes-validate $KUBERNETES_VALIDATE_VERSION --strict, Kubernetes $KUBERNETES_VERSION"
if ! "$VENV/bin/kubernetes-validate" --version 2>/dev/null | grep -qF "$KUBERNETES_VALIDATE_VERSION"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
"$VENV/bin/kubernetes-validate" --strict --kubernetes-version "$KUBERNETES_VERSION" \
  deploy/kubernetes/*.yaml
