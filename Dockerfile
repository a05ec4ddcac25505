# Montage's two binaries, `coordinator` (render, batch, agent) and
# `chunk-worker`, on Debian 12 with the FFmpeg 5.1 runtime libraries they
# link. Build: docker build -t montage . (from the repository root).

FROM rust:1.95-bookworm AS build
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends \
      pkg-config clang libclang-dev \
      libavcodec-dev libavformat-dev libavutil-dev libswscale-dev \
      libswresample-dev libavfilter-dev libavdevice-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p coordinator -p chunk-worker \
 && install -m 0755 target/release/coordinator target/release/chunk-worker /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends \
      ca-certificates libavcodec59 libavformat59 libavutil57 libswscale6 \
      libswresample4 libavfilter8 libavdevice59 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/cache/montage --create-home montage
COPY --from=build /usr/local/bin/coordinator /usr/local/bin/chunk-worker /usr/local/bin/
USER montage
WORKDIR /var/cache/montage
# gRPC (workers) and Prometheus metrics.
EXPOSE 50051 9464
ENTRYPOINT ["chunk-worker"]
CMD ["serve", "--listen", "0.0.0.0:50051", "--cache-dir", "/var/cache/montage", "--token-file", "/etc/montage/token", "--metrics-listen", "0.0.0.0:9464"]
