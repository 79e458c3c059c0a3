#!/bin/sh
# procps works in every variant; the debug variant also carries strace.
set -eu
ps -o pid,comm -p $$ >/dev/null && echo "procps ok"
if command -v strace >/dev/null; then strace -V | head -1; fi
