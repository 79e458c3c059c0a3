#!/bin/sh
# NumPy imports, multiplies correctly, and reports its throughput.
set -eu
python3 /opt/bench/matmul.py
