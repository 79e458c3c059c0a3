#!/bin/sh
# Two MPI ranks on one node inside the image; the program checks its own allreduce.
set -eu
mpirun --oversubscribe -np 2 /usr/local/bin/hello_mpi
