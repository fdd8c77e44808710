#!/usr/bin/env bash
# The Python client (clients/python) against the real binaries: a venv under target/ with
# grpcio and grpcio-tools from PyPI, stubs generated from proto/, the service and the gateway
# on a fresh SQLite database, one connected GitHub integration (seed-demo) and one signed
# delivery through the gateway. The client must get the integration's token and consume and
# acknowledge the delivery; the gateway must then list the event as PROCESSED.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

out="$root/target/python-client"
venv="$out/venv"
gen="$out/gen"
mkdir -p "$out"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r clients/python/requirements.txt
rm -rf "$gen" && mkdir -p "$gen"
"$venv/bin/python" -m grpc_tools.protoc -I proto --python_out="$gen" --grpc_python_out="$gen" \
  integrations/v1/integrations.proto

cargo build -q -p integration-service -p rest-gateway -p test-support --bin integration-service \
  --bin rest-gateway --bin seed-demo
bin="$root/target/debug"

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

grpc_port=$(free_port)
http_port=$(free_port)
metrics_port=$(free_port)
export DATABASE_URL="sqlite://$work/integrations.db?mode=rwc"
export INTEGRATION_ENCRYPTION_KEY=$("$venv/bin/python" -c 'import secrets; print(secrets.token_hex(32))')
export SUPABASE_JWT_SECRET=$("$venv/bin/python" -c 'import secrets; print(secrets.token_hex(32))')
export RUST_LOG=warn

(cd "$work" && GRPC_ADDR="127.0.0.1:$grpc_port" METRICS_ADDR="127.0.0.1:$metrics_port" \
  exec "$bin/integration-service" serve) &
pids+=($!)
wait_port "$grpc_port"
HTTP_ADDR="127.0.0.1:$http_port" INTEGRATION_SERVICE_URL="http://127.0.0.1:$grpc_port" \
  "$bin/rest-gateway" &
pids+=($!)
wait_port "$http_port"

access_token="gho_python_client_check"
eval "$(cd "$work" && SEED_ORG=1 SEED_ACCESS_TOKEN="$access_token" "$bin/seed-demo")"

body='{"ref":"refs/heads/main","commits":[]}'
signature=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$WEBHOOK_SECRET" -r | cut -d' ' -f1)
status=$(curl -s -o "$work/delivery.json" -w '%{http_code}' -X POST \
  "http://127.0.0.1:$http_port/api/integrations/github/webhook/$INTEGRATION_ID" \
  -H 'Content-Type: application/json' -H 'X-GitHub-Event: push' \
  -H "X-GitHub-Delivery: $("$venv/bin/python" -c 'import uuid; print(uuid.uuid4())')" \
  -H "X-Hub-Signature-256: sha256=$signature" -d "$body")
[ "$status" = 200 ] || { echo "delivery answered $status: $(cat "$work/delivery.json")" >&2; exit 1; }
event_id=$("$venv/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["eventId"])' "$work/delivery.json")

SERVICE_ADDRESS="127.0.0.1:$grpc_port" SERVICE_ROLE_JWT="$SERVICE_ROLE_JWT" ORGANIZATION_ID=1 \
  PYTHONPATH="$gen" timeout 60 "$venv/bin/python" clients/python/integrations_client.py github 1 \
  | tee "$work/client.out"
grep -q "access token for github: ${#access_token} characters, expires never" "$work/client.out"
grep -q "event $event_id (push from github)" "$work/client.out"
grep -q "^1 events handled$" "$work/client.out"

curl -s "http://127.0.0.1:$http_port/api/integrations/github/events?status=processed" \
  -H "Authorization: Bearer $OWNER_JWT" -o "$work/events.json"
"$venv/bin/python" - "$work/events.json" "$event_id" <<'PY'
import json, sys
events = json.load(open(sys.argv[1]))["data"]
assert [e["id"] for e in events] == [sys.argv[2]], events
assert events[0]["status"] == "PROCESSED", events
PY
echo "python client: token received, event $event_id consumed and acknowledged"
