// bf16 as 16 raw bits (unsigned short), so no CUDA header is needed.
// Included by the kernel files that read or write bf16; NVRTC gets it
// inlined by src/backend/cuda/kernels.rs (`expand_includes`).
#pragma once

// Round to nearest, ties to even, as __float2bfloat16_rn; NaN stays NaN.
__device__ __forceinline__ unsigned short f32_to_bf16_bits(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

__device__ __forceinline__ float bf16_bits_to_f32(unsigned short b) {
    return __uint_as_float(((unsigned int)b) << 16);
}

// Element i of an f32 or a bf16 array, as f32; and the stores back.
__device__ __forceinline__ float load_f32(const float *p, long long i) { return p[i]; }
__device__ __forceinline__ float load_f32(const unsigned short *p, long long i) {
    return bf16_bits_to_f32(p[i]);
}
__device__ __forceinline__ void store_f32(float *p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void store_f32(unsigned short *p, long long i, float v) {
    p[i] = f32_to_bf16_bits(v);
}

// Four bf16 in one 8-byte load or store.
struct alignas(8) bf16x4 {
    unsigned short x, y, z, w;
};
