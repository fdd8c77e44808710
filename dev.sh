#!/usr/bin/env bash
# Starts the integration service (gRPC, 127.0.0.1:50051) and the REST gateway (HTTP,
# 127.0.0.1:8080) on the embedded SQLite default, with no configuration needed.
# Ctrl-C stops both. Any variable of the README's configuration table may be set (or put in .env).
set -euo pipefail
cd "$(dirname "$0")"
cargo build -p integration-service -p rest-gateway
target/debug/integration-service serve &
service=$!
target/debug/rest-gateway &
gateway=$!
trap 'kill $service $gateway 2>/dev/null; wait' INT TERM EXIT
wait -n $service $gateway
