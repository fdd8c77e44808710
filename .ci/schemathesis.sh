#!/usr/bin/env bash
# schemathesis (PyPI) against a live gateway: every operation of rest-gateway/openapi.json,
# as the document serves it, with the checks of schemathesis.toml (no 5xx, statuses, content
# types, headers and bodies conforming to their schemas, invalid data refused, valid data
# accepted). The debug binaries run on a fresh SQLite data dir with a development session
# (`dev-token`, OWNER of organization 1). Bounded: a capped number of examples per operation
# and a time budget, one worker (the machine has 2 cores).
#
# Run from CI (.ci/run) after the cargo tests, or by hand: `bash .ci/schemathesis.sh`.
# SCHEMATHESIS_SEED, SCHEMATHESIS_MAX_EXAMPLES and SCHEMATHESIS_MAX_TIME override the bounds.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

version=4.32.5
venv=$root/target/schemathesis-venv
if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$version"; then
  echo "installing schemathesis $version into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

cargo build --quiet -p integration-service -p rest-gateway

run=$root/target/schemathesis-run
rm -rf "$run"
mkdir -p "$run/data"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
grpc_port=$(free_port)
http_port=$(free_port)

export APP_ENV=development
export DATABASE_URL="sqlite://$run/data/integrations.db?mode=rwc"
export INTEGRATION_ENCRYPTION_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
export SUPABASE_JWT_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
export GRPC_ADDR=127.0.0.1:$grpc_port
export HTTP_ADDR=127.0.0.1:$http_port
export INTEGRATION_SERVICE_URL=http://127.0.0.1:$grpc_port
export GATEWAY_METRICS_ADDR=127.0.0.1:$(free_port)
export PUBLIC_API_URL=http://127.0.0.1:$http_port
# The service's own metrics on a free port (9090, the default, may be taken on a shared host).
export METRICS_ADDR=127.0.0.1:$(free_port)
# An OAuth app for every catalog provider, so that authorize answers its 200 (no provider is
# ever called: the callbacks' made-up states are refused before any code exchange).
for provider in $(python3 -c 'import json; print(" ".join(p["name"] for p in json.load(open("integration-service/providers.json"))))'); do
  upper=$(echo "$provider" | tr '[:lower:]' '[:upper:]')
  export "${upper}_CLIENT_ID=schemathesis-$provider" "${upper}_CLIENT_SECRET=schemathesis-secret"
done
export SLACK_SIGNING_SECRET=schemathesis-signing-secret
export RUST_LOG=${RUST_LOG:-warn}

cd "$run"
"$root/target/debug/integration-service" migrate >/dev/null
token=$("$root/target/debug/integration-service" dev-token --org 1 \
  --user 7f1c2a9e-3b4d-4c5e-8f6a-1b2c3d4e5f60 --role OWNER)
"$root/target/debug/integration-service" serve >"$run/service.log" 2>&1 &
service=$!
"$root/target/debug/rest-gateway" >"$run/gateway.log" 2>&1 &
gateway=$!
trap 'kill $service $gateway 2>/dev/null || true; wait $service $gateway 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$http_port/health" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$http_port/health" >/dev/null

status=0
"$venv/bin/st" --config-file "$root/.ci/schemathesis.toml" run \
  "http://127.0.0.1:$http_port/openapi.json" \
  --header "Authorization: Bearer $token" \
  --seed "${SCHEMATHESIS_SEED:-20261126}" \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-30}" \
  --max-time "${SCHEMATHESIS_MAX_TIME:-180}" \
  --workers 1 \
  --report junit --report-dir "$run/report" || status=$?

if [ "$status" -ne 0 ]; then
  echo "schemathesis failed; the last lines of both binaries' logs:"
  tail -n 40 "$run/service.log" "$run/gateway.log"
fi
exit "$status"
