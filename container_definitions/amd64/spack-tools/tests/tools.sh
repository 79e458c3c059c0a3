#!/bin/sh
# The environment's programs are on PATH once the profile script of the Spack view is read, and the
# files: pair and the epilogue's link are in the image.
set -eu
. /etc/profile.d/z10_spack_environment.sh
py-tool
zlib
cat /etc/spack-tools-welcome
grep -q '"py-tool"' /opt/spack-environment/spack.lock
