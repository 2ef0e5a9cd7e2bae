// Reductions with a fixed order: the result depends only on the sizes,
// never on timing (no float atomics), so runs are bit-reproducible.
//
// Block size is fixed at 256 threads (REDUCE_THREADS in
// src/backend/gpu/mod.rs); every kernel here assumes it.

#include "bf16.cuh"
#include "block_sum.cuh"

#define RT BLOCK_THREADS

// partial[blockIdx.x] = Σ x[i]² over the block's grid-stride elements.
extern "C" __global__ void sum_squares_partial_f32(long long n, const float *__restrict__ x,
                                                   float *__restrict__ partial) {
    __shared__ float sh[RT];
    float acc = 0.0f;
    bool v4 = (n % 4 == 0) && ((reinterpret_cast<unsigned long long>(x) & 15) == 0);
    if (v4) {
        const float4 *x4 = reinterpret_cast<const float4 *>(x);
        for (long long i = blockIdx.x * (long long)RT + threadIdx.x; i < n / 4;
             i += (long long)gridDim.x * RT) {
            float4 a = x4[i];
            acc += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w;
        }
    } else {
        for (long long i = blockIdx.x * (long long)RT + threadIdx.x; i < n;
             i += (long long)gridDim.x * RT) {
            float a = x[i];
            acc += a * a;
        }
    }
    float s = block_sum_256(acc, sh);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// One block: stats[stat] = Σ partial[0..n] (+ stats[stat] if accumulate).
extern "C" __global__ void finish_sum_f32(int n, const float *__restrict__ partial,
                                          float *__restrict__ stats, int stat, int accumulate) {
    __shared__ float sh[RT];
    float acc = 0.0f;
    for (int i = threadIdx.x; i < n; i += RT) acc += partial[i];
    float s = block_sum_256(acc, sh);
    if (threadIdx.x == 0) stats[stat] = accumulate ? stats[stat] + s : s;
}

// out[c] = beta * out[c] + Σ_r x[r, c] (beta == 0 overwrites, as in BLAS).
// Block (32, 8): 32 adjacent columns (coalesced), 8 row lanes, each row
// lane summing rows ty, ty + 8, ... of the block's slice of rows; the 8
// lanes are then added in order. The rows are cut into gridDim.y slices
// of per_slice rows so that a few columns still fill the GPU: with one
// slice the sum goes straight to out, else to partial[slice * cols + c],
// which col_sum_finish_f32 adds up in slice order. The slicing depends
// only on the sizes (src/backend/gpu/mod.rs), so the sums are the same
// bits on every run.
// x is f32 or bf16 (--precision bf16); sums and out are f32.
template <class T>
__device__ __forceinline__ void col_sum(long long rows, long long cols, long long per_slice,
                                        const T *__restrict__ x, float *__restrict__ partial,
                                        float *__restrict__ out, float beta) {
    __shared__ float sh[8][33];
    long long c = blockIdx.x * 32LL + threadIdx.x;
    long long r0 = blockIdx.y * per_slice;
    long long r1 = r0 + per_slice < rows ? r0 + per_slice : rows;
    float acc = 0.0f;
    if (c < cols) {
        for (long long r = r0 + threadIdx.y; r < r1; r += 8) acc += load_f32(x, r * cols + c);
    }
    sh[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        float s = 0.0f;
        for (int k = 0; k < 8; ++k) s += sh[k][threadIdx.x];
        if (gridDim.y == 1) {
            out[c] = beta == 0.0f ? s : beta * out[c] + s;
        } else {
            partial[blockIdx.y * cols + c] = s;
        }
    }
}

extern "C" __global__ void col_sum_f32(long long rows, long long cols, long long per_slice,
                                       const float *__restrict__ x,
                                       float *__restrict__ partial, float *__restrict__ out,
                                       float beta) {
    col_sum(rows, cols, per_slice, x, partial, out, beta);
}

extern "C" __global__ void col_sum_bf16(long long rows, long long cols, long long per_slice,
                                        const unsigned short *__restrict__ x,
                                        float *__restrict__ partial, float *__restrict__ out,
                                        float beta) {
    col_sum(rows, cols, per_slice, x, partial, out, beta);
}

// out[c] = beta * out[c] + Σ_s partial[s * cols + c], s in order.
extern "C" __global__ void col_sum_finish_f32(long long cols, int slices,
                                              const float *__restrict__ partial,
                                              float *__restrict__ out, float beta) {
    for (long long c = blockIdx.x * (long long)blockDim.x + threadIdx.x; c < cols;
         c += (long long)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int k = 0; k < slices; ++k) s += partial[k * cols + c];
        out[c] = beta == 0.0f ? s : beta * out[c] + s;
    }
}

// x[i] *= s.
extern "C" __global__ void scale_f32(long long n, float *__restrict__ x, float s) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        x[i] *= s;
    }
}
