#!/usr/bin/env bash
# Installs everything Montage needs on a fresh Debian 12 machine (run as root).
# It is the one list of system packages: `.ci/run` and the README call it.
set -euo pipefail

packages=(
    # ffmpeg-next links the FFmpeg 5.1 libraries; bindgen needs clang.
    pkg-config clang libclang-dev
    libavcodec-dev libavformat-dev libavutil-dev libswscale-dev
    libswresample-dev libavfilter-dev libavdevice-dev
    # Independent judges of our media in tests: Debian's ffmpeg and ffprobe,
    # and Chromium, which must play our MP4s in a <video> element.
    ffmpeg chromium
    # LittleCMS's transicc judges the colour conversion of images.
    liblcms2-utils
    # A CBDT colour emoji font the text tests render (Noto Color Emoji).
    fonts-noto-color-emoji
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# A real S3-protocol server (moto) for the storage tests, from PyPI.
bash "$(dirname "$0")/setup-s3-test-server.sh"
