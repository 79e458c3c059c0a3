#!/bin/sh
# The builder answers: Spack runs, knows a compiler, and its install tree is where recipes expect it.
set -e
spack --version
spack compilers | grep -q gcc
test "$(spack config get config | grep -c '/opt/software')" -ge 1
echo "spack ok"
