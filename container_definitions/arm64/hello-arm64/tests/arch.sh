#!/bin/sh
# Built and run as arm64: the RUN step and this test both see an aarch64 machine (QEMU here).
echo "built on $(cat /etc/build-arch)"
echo "runs on $(uname -m)"
