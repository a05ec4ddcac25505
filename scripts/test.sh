#!/usr/bin/env bash
# Runs every Montage test: unit, property, integration (real processes, real
# gRPC on loopback, Debian's ffprobe as judge) and doc tests; builds the docs
# with warnings as errors; and checks the architecture invariants. Benchmarks
# run too: `--all-targets` runs each criterion benchmark once in test mode
# (same dev build as the tests, no second release build of every dependency),
# so they keep working. Run scripts/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== architecture invariants"
bash scripts/check-architecture.sh

echo "== tests"
cargo test --workspace --all-targets
cargo test --workspace --doc

echo "== docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
