#!/usr/bin/env bash
# Starts the integration service (gRPC, 127.0.0.1:50051) and the REST gateway (HTTP,
# 127.0.0.1:8080) on the embedded SQLite default, with no configuration needed, and prints
# where everything is once both answer. Ctrl-C stops both. Any variable of the README's
# configuration table may be set (or put in .env).
set -euo pipefail
cd "$(dirname "$0")"
echo "building (the first build takes a few minutes; later ones seconds)..."
cargo build -p integration-service -p rest-gateway
target/debug/integration-service serve &
service=$!
target/debug/rest-gateway &
gateway=$!
trap 'kill $service $gateway 2>/dev/null; wait' INT TERM EXIT

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
  gRPC          $grpc_addr   (reflection on: grpcurl -plaintext $grpc_addr list)
  metrics       service http://${METRICS_ADDR:-127.0.0.1:9090}/metrics, gateway http://${GATEWAY_METRICS_ADDR:-127.0.0.1:9091}/metrics
  a session     target/debug/integration-service dev-token --org 1 --user 7f1c2a9e-3b4d-4c5e-8f6a-1b2c3d4e5f60 --role OWNER
  internal      target/debug/integration-service dev-token --service-role   (gRPC callers; name the org in x-organization-id)
  data          ./data (SQLite and the generated development secrets); stop, then rm -rf data to start over
  request logs  RUST_LOG=info,integration_service=debug,rest_gateway=debug ./dev.sh

READY
else
  echo "the service or the gateway did not start: see the lines above" >&2
fi
wait -n $service $gateway
