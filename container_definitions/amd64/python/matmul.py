"""A small NumPy check with a throughput figure the test judges against a threshold."""
import time

import numpy as np

n = 512
a = np.random.default_rng(0).random((n, n))
b = np.eye(n)
start = time.perf_counter()
for _ in range(5):
    c = a @ b
elapsed = time.perf_counter() - start
assert np.allclose(c, a)
print(f"numpy {np.__version__} matmul ok")
print(f"gflops {5 * 2 * n**3 / elapsed / 1e9:.2f}")
