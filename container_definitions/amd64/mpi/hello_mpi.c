/* Each rank reports itself; rank 0 checks an allreduce over all ranks. */
#include <mpi.h>
#include <stdio.h>

int main(int argc, char **argv) {
    int rank = 0, size = 0, sum = 0;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    printf("rank %d of %d\n", rank, size);
    if (rank == 0) {
        printf("allreduce sum %d (expected %d): %s\n", sum, size * (size - 1) / 2,
               sum == size * (size - 1) / 2 ? "Test success" : "Test failure");
    }
    MPI_Finalize();
    return sum == size * (size - 1) / 2 ? 0 : 1;
}
