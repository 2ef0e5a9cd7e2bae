// The fixed-order tree sum of one value per thread over a block of
// BLOCK_THREADS threads (REDUCE_THREADS in src/backend/gpu/mod.rs); every
// kernel that calls it is launched with exactly that many. Included by
// loss.cu and reduce.cu; NVRTC gets it inlined by src/backend/cuda/kernels.rs.
#pragma once

#define BLOCK_THREADS 256

// Thread 0 (and every thread) gets the sum; `sh` holds BLOCK_THREADS floats.
__device__ __forceinline__ float block_sum_256(float v, float *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = BLOCK_THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    return sh[0];
}
