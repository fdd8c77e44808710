#!/usr/bin/env bash
# Starts the integration service (gRPC, 127.0.0.1:50051) and the REST gateway (HTTP,
# 127.0.0.1:8080) on the embedded SQLite default, with no configuration needed, and prints
# where everything is once both answer. Ctrl-C stops both. Any variable of
# docs/configuration.md may be set (or put in .env).
#
# Outside production it also starts the sandbox provider (fake GitHub on 127.0.0.1:8070,
# Slack on 8071, Microsoft on 8072; SANDBOX_ADDR moves them, SANDBOX=off leaves it out) and
# points those providers at it, unless their client id is already configured.
set -euo pipefail
cd "$(dirname "$0")"
echo "building (the first build takes a few minutes; later ones seconds)..."
cargo build -p integration-service -p rest-gateway
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT

sandbox_addr=${SANDBOX_ADDR:-127.0.0.1:8070}
sandbox_line=""
if [[ "${APP_ENV:-development}" != production && "${SANDBOX:-on}" != off && -z "${GITHUB_CLIENT_ID:-}" ]]; then
  eval "$(target/debug/integration-service sandbox env --addr "$sandbox_addr")"
  target/debug/integration-service sandbox serve --addr "$sandbox_addr" &
  pids+=($!)
  sandbox_line="  sandbox       GitHub, Slack, Microsoft connect to fake providers at $sandbox_addr (README: Quickstart)"
fi
target/debug/integration-service serve &
service=$!
pids+=($service)
target/debug/rest-gateway &
gateway=$!
pids+=($gateway)

grpc_addr=${GRPC_ADDR:-127.0.0.1:50051}
http_addr=${HTTP_ADDR:-127.0.0.1:8080}
answers() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
for _ in $(seq 1 100); do
  answers "$grpc_addr" && answers "$http_addr" && break
  sleep 0.2
done
if answers "$grpc_addr" && answers "$http_addr"; then
  cat <<READY

ready
  REST API      http://$http_addr/api/integrations   (OpenAPI: http://$http_addr/openapi.json)
  console       http://$http_addr/console
  gRPC          $grpc_addr   (reflection on: grpcurl -plaintext $grpc_addr list; docs/api.md)
  metrics       service http://${METRICS_ADDR:-127.0.0.1:9090}/metrics, gateway http://${GATEWAY_METRICS_ADDR:-127.0.0.1:9091}/metrics
  a session     target/debug/integration-service dev-token --org 1 --user 7f1c2a9e-3b4d-4c5e-8f6a-1b2c3d4e5f60 --role OWNER
  internal      target/debug/integration-service dev-token --service-role   (gRPC callers; name the org in x-organization-id)
  data          ./data (SQLite and the generated development secrets); stop, then rm -rf data to start over
  request logs  RUST_LOG=info,integration_service=debug,rest_gateway=debug ./dev.sh
$sandbox_line

READY
else
  echo "the service or the gateway did not start: see the lines above" >&2
fi
wait -n $service $gateway
