// f32 <-> bf16 conversion (bf16.cuh: raw bits, round to nearest even).

#include "bf16.cuh"

extern "C" __global__ void f32_to_bf16(long long n, const float *__restrict__ x,
                                       unsigned short *__restrict__ y) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        y[i] = f32_to_bf16_bits(x[i]);
    }
}

extern "C" __global__ void bf16_to_f32(long long n, const unsigned short *__restrict__ x,
                                       float *__restrict__ y) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        y[i] = bf16_bits_to_f32(x[i]);
    }
}
