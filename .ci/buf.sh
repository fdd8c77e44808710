#!/usr/bin/env bash
# The proto as a product: `buf lint` (STANDARD and COMMENTS rules, buf.yaml) and `buf
# breaking` (FILE rules) against the committed contract, proto/contract.binpb — and, on a
# branch other than main, against main's protos too, so a change is caught before it lands.
# buf comes from npm (@bufbuild/buf) through npx; nothing else is needed.
#
# After a deliberate, compatible release of the contract, refresh the image:
#   npx --yes @bufbuild/buf build -o proto/contract.binpb
set -euo pipefail
cd "$(dirname "$0")/.."

buf() { npx --yes @bufbuild/buf@1.75.0 "$@"; }

buf lint
echo "buf lint: passed"
buf breaking --against proto/contract.binpb
echo "buf breaking against proto/contract.binpb: passed"
branch=$(git rev-parse --abbrev-ref HEAD 2>/dev/null || echo main)
if [ "$branch" != main ] && git rev-parse --verify --quiet main >/dev/null; then
  buf breaking --against '.git#branch=main,subdir=proto'
  echo "buf breaking against main: passed"
fi
