// f32 <-> bf16 conversion. bf16 values are carried as their 16 raw bits
// (unsigned short), so no CUDA header is needed; rounding is to nearest,
// ties to even, as __float2bfloat16_rn; NaN stays NaN.

__device__ __forceinline__ unsigned short f32_to_bf16_bits(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

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
        y[i] = __uint_as_float(((unsigned int)x[i]) << 16);
    }
}
