#!/usr/bin/env bash
# Checks the Architecture Invariants of ARCHITECTURE.md that the dependency
# graph and the sources can prove:
# 1. the pure crates stay pure (no async runtime, gRPC, protobuf, FFmpeg or S3);
# 2. only chunk-worker and coordinator depend on the proto crate, and inside
#    them only the worker's gRPC service and the coordinator's grpc module
#    name generated proto types (`pb::`, `montage_proto`); tests, which act
#    as foreign gRPC clients, may;
# 3. domain types never derive prost::Message.
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0
broken() {
    echo "Architecture invariant broken: $*" >&2
    fail=1
}

deps_of() {
    cargo tree -p "$1" -e normal --prefix none --format '{p}' 2>/dev/null | awk '{print $1}' | sort -u
}

for crate in timebase chunker spec composition; do
    deps=$(deps_of "$crate")
    for forbidden in tokio tonic prost ffmpeg-next ffmpeg-sys-next montage-proto aws-sdk-s3; do
        if grep -qx "$forbidden" <<<"$deps"; then
            broken "$crate depends on $forbidden"
        fi
    done
done

for crate in timebase chunker spec composition combine storage; do
    if deps_of "$crate" | grep -qx montage-proto; then
        broken "$crate depends on montage-proto"
    fi
done

# Within the two crates that may: only their gRPC edge.
allowed='^(crates/chunk-worker/src/service\.rs|crates/coordinator/src/grpc\.rs)$'
leaks=$(grep -rlE '\bmontage_proto\b|\bpb::' crates/chunk-worker/src crates/coordinator/src \
    | grep -vE "$allowed" || true)
for f in $leaks; do
    broken "$f names generated proto types (only the worker's service.rs and the coordinator's grpc.rs may)"
done

if grep -rn 'derive(.*prost::Message' crates/*/src proto/src >/dev/null 2>&1; then
    broken "a domain type derives prost::Message"
fi

[ "$fail" -eq 0 ] && echo "ok: timebase, chunker, spec and composition use no tokio, tonic, prost or ffmpeg; proto types appear only in chunk-worker's service.rs and coordinator's grpc.rs"
exit "$fail"
