#!/usr/bin/env bash
# Checks the Architecture Invariants of ARCHITECTURE.md that a dependency
# graph can prove: the pure crates stay pure.
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0
for crate in timebase chunker composition; do
    deps=$(cargo tree -p "$crate" -e normal --prefix none --format '{p}' 2>/dev/null | awk '{print $1}' | sort -u)
    for forbidden in tokio tonic prost ffmpeg-next ffmpeg-sys-next montage-proto aws-sdk-s3; do
        if grep -qx "$forbidden" <<<"$deps"; then
            echo "Architecture invariant broken: $crate depends on $forbidden" >&2
            fail=1
        fi
    done
done
# Only the chunk worker and the coordinator (and the proto crate itself) see
# generated proto types.
for crate in timebase chunker composition combine storage; do
    if cargo tree -p "$crate" -e normal --prefix none --format '{p}' 2>/dev/null | awk '{print $1}' | grep -qx montage-proto; then
        echo "Architecture invariant broken: $crate depends on montage-proto" >&2
        fail=1
    fi
done
[ "$fail" -eq 0 ] && echo "ok: timebase, chunker and composition use no tokio, tonic, prost or ffmpeg; only chunk-worker and coordinator see proto types"
exit "$fail"
