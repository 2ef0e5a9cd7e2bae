"""MPI_Allreduce (sum, float32) through mpi4py, timed like `ringtrain bench
allreduce`: per size, warm-up, then -n calls back to back after a barrier;
each rank's mean, the max over ranks; busbw = algbw * 2(n-1)/n.

A benchmark only (not a test dependency):
    python3 -m venv target/py && target/py/bin/pip install mpi4py numpy
    mpirun -np 2 target/py/bin/python benches/mpi4py_allreduce.py 1M 64M 4 20
Prints one JSON object per size on rank 0.
"""
import json
import sys
import time

import numpy as np
from mpi4py import MPI


def size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * mult[s[-1]] if s[-1] in mult else int(s)


def main():
    lo, hi, factor, iters = size(sys.argv[1]), size(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    comm = MPI.COMM_WORLD
    n = comm.Get_size()
    b = lo
    while b <= hi:
        count = b // 4
        src = np.full(count, comm.Get_rank() + 1, dtype=np.float32)
        dst = np.empty_like(src)
        row = {"size": b, "count": count}
        for place in ("out_of_place", "in_place"):
            buf = src.copy()
            def call():
                if place == "in_place":
                    comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
                else:
                    comm.Allreduce(src, dst, op=MPI.SUM)
            for _ in range(5):
                call()
            comm.Barrier()
            t0 = time.perf_counter()
            for _ in range(iters):
                call()
            t = (time.perf_counter() - t0) / iters
            t = comm.allreduce(t, op=MPI.MAX)
            algbw = b / t / 1e9
            row[place] = {"time_us": t * 1e6, "algbw": algbw, "busbw": algbw * 2 * (n - 1) / n}
        if comm.Get_rank() == 0:
            print(json.dumps(row), flush=True)
        b *= factor


main()
