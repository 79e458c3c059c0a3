#!/bin/sh
# The base image identifies itself and its Debian release.
set -eu
cat /etc/containers-ci-release
grep PRETTY_NAME /etc/os-release
