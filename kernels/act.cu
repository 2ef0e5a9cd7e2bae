// Bias + activation forward and activation backward, fused.
//
// Activation codes (src/backend/cuda/mod.rs `act_code`): -1 none, 0 relu,
// 1 gelu (tanh form), 2 tanh. Formulas match src/backend/cpu.rs
// `act_fwd`/`act_grad` exactly. Element-wise, grid-stride; the `_v4`
// variants move float4s and are used when the host has checked that every
// length is a multiple of 4 and every pointer 16-byte aligned. The `_bf16`
// kernels store z, h and dh as bf16 (--precision bf16) and compute in f32;
// their `_v4` variants move 4 bf16 (8 bytes) at a time.

#include "bf16.cuh"

#define GELU_C 0.7978845608028654f
#define GELU_K 0.044715f

__device__ __forceinline__ float act_fwd(int act, float z) {
    switch (act) {
    case 0: return z < 0.0f ? 0.0f : z;  // NaN stays NaN, like torch.relu
    case 1: {
        float u = GELU_C * (z + GELU_K * z * z * z);
        return 0.5f * z * (1.0f + tanhf(u));
    }
    case 2: return tanhf(z);
    default: return z;
    }
}

__device__ __forceinline__ float act_grad(int act, float z, float h) {
    switch (act) {
    case 0: return z > 0.0f ? 1.0f : 0.0f;
    case 1: {
        float t = tanhf(GELU_C * (z + GELU_K * z * z * z));
        return 0.5f * (1.0f + t)
             + 0.5f * z * (1.0f - t * t) * GELU_C * (1.0f + 3.0f * GELU_K * z * z);
    }
    case 2: return 1.0f - h * h;
    default: return 1.0f;
    }
}

// The column of element i of a row-major matrix, followed along a
// grid-stride loop without a 64-bit division per element (which would
// make these kernels compute-bound): the stride's own column offset is
// added and wrapped once.
struct ColumnOf {
    long long c, step, cols;
    __device__ __forceinline__ ColumnOf(long long i, long long stride, long long cols_)
        : c(i % cols_), step(stride % cols_), cols(cols_) {}
    __device__ __forceinline__ void advance() {
        c += step;
        if (c >= cols) c -= cols;
    }
};

// z[r, c] += bias[c]; h[r, c] = act(z[r, c]) when h is not null and act >= 0.
extern "C" __global__ void bias_act_f32(int act, long long rows, long long cols,
                                        const float *__restrict__ bias,
                                        float *__restrict__ z, float *__restrict__ h) {
    long long n = rows * cols;
    long long i0 = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    long long stride = (long long)gridDim.x * blockDim.x;
    ColumnOf col(i0, stride, cols);
    for (long long i = i0; i < n; i += stride, col.advance()) {
        float v = z[i] + bias[col.c];
        z[i] = v;
        if (h != nullptr && act >= 0) h[i] = act_fwd(act, v);
    }
}

// As bias_act_f32 with cols % 4 == 0 and 16-byte aligned pointers.
extern "C" __global__ void bias_act_f32_v4(int act, long long rows, long long cols,
                                           const float *__restrict__ bias,
                                           float *__restrict__ z, float *__restrict__ h) {
    long long n4 = rows * cols / 4;
    long long c4 = cols / 4;
    const float4 *b4 = reinterpret_cast<const float4 *>(bias);
    float4 *z4 = reinterpret_cast<float4 *>(z);
    float4 *h4 = reinterpret_cast<float4 *>(h);
    long long i0 = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    long long stride = (long long)gridDim.x * blockDim.x;
    ColumnOf col(i0, stride, c4);
    for (long long i = i0; i < n4; i += stride, col.advance()) {
        float4 v = z4[i];
        float4 b = b4[col.c];
        v.x += b.x; v.y += b.y; v.z += b.z; v.w += b.w;
        z4[i] = v;
        if (h != nullptr && act >= 0) {
            float4 o;
            o.x = act_fwd(act, v.x); o.y = act_fwd(act, v.y);
            o.z = act_fwd(act, v.z); o.w = act_fwd(act, v.w);
            h4[i] = o;
        }
    }
}

// dh[i] *= act'(z[i]) (h = act(z) given too).
extern "C" __global__ void act_backward_f32(int act, long long n, const float *__restrict__ z,
                                            const float *__restrict__ h,
                                            float *__restrict__ dh) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        dh[i] = dh[i] * act_grad(act, z[i], h[i]);
    }
}

// As act_backward_f32 with n % 4 == 0 and 16-byte aligned pointers.
extern "C" __global__ void act_backward_f32_v4(int act, long long n, const float *__restrict__ z,
                                               const float *__restrict__ h,
                                               float *__restrict__ dh) {
    long long n4 = n / 4;
    const float4 *z4 = reinterpret_cast<const float4 *>(z);
    const float4 *h4 = reinterpret_cast<const float4 *>(h);
    float4 *d4 = reinterpret_cast<float4 *>(dh);
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n4;
         i += (long long)gridDim.x * blockDim.x) {
        float4 zz = z4[i], hh = h4[i], d = d4[i];
        d.x *= act_grad(act, zz.x, hh.x);
        d.y *= act_grad(act, zz.y, hh.y);
        d.z *= act_grad(act, zz.z, hh.z);
        d.w *= act_grad(act, zz.w, hh.w);
        d4[i] = d;
    }
}

// bf16 storage: z[r, c] = bf16(z + bias[c]); h = bf16(act(z + bias)), the
// activation taken of the f32 sum.
extern "C" __global__ void bias_act_bf16(int act, long long rows, long long cols,
                                         const float *__restrict__ bias,
                                         unsigned short *__restrict__ z,
                                         unsigned short *__restrict__ h) {
    long long n = rows * cols;
    long long i0 = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    long long stride = (long long)gridDim.x * blockDim.x;
    ColumnOf col(i0, stride, cols);
    for (long long i = i0; i < n; i += stride, col.advance()) {
        float v = bf16_bits_to_f32(z[i]) + bias[col.c];
        z[i] = f32_to_bf16_bits(v);
        if (h != nullptr && act >= 0) h[i] = f32_to_bf16_bits(act_fwd(act, v));
    }
}

// As bias_act_bf16 with cols % 4 == 0, z and h 8-byte and bias 16-byte aligned.
extern "C" __global__ void bias_act_bf16_v4(int act, long long rows, long long cols,
                                            const float *__restrict__ bias,
                                            unsigned short *__restrict__ z,
                                            unsigned short *__restrict__ h) {
    long long n4 = rows * cols / 4;
    long long c4 = cols / 4;
    const float4 *b4 = reinterpret_cast<const float4 *>(bias);
    bf16x4 *z4 = reinterpret_cast<bf16x4 *>(z);
    bf16x4 *h4 = reinterpret_cast<bf16x4 *>(h);
    long long i0 = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    long long stride = (long long)gridDim.x * blockDim.x;
    ColumnOf col(i0, stride, c4);
    for (long long i = i0; i < n4; i += stride, col.advance()) {
        bf16x4 zz = z4[i];
        float4 b = b4[col.c];
        float v0 = bf16_bits_to_f32(zz.x) + b.x, v1 = bf16_bits_to_f32(zz.y) + b.y;
        float v2 = bf16_bits_to_f32(zz.z) + b.z, v3 = bf16_bits_to_f32(zz.w) + b.w;
        bf16x4 o;
        o.x = f32_to_bf16_bits(v0); o.y = f32_to_bf16_bits(v1);
        o.z = f32_to_bf16_bits(v2); o.w = f32_to_bf16_bits(v3);
        z4[i] = o;
        if (h != nullptr && act >= 0) {
            o.x = f32_to_bf16_bits(act_fwd(act, v0)); o.y = f32_to_bf16_bits(act_fwd(act, v1));
            o.z = f32_to_bf16_bits(act_fwd(act, v2)); o.w = f32_to_bf16_bits(act_fwd(act, v3));
            h4[i] = o;
        }
    }
}

// bf16 storage: dh[i] = bf16(dh[i] * act'(z[i])).
extern "C" __global__ void act_backward_bf16(int act, long long n,
                                             const unsigned short *__restrict__ z,
                                             const unsigned short *__restrict__ h,
                                             unsigned short *__restrict__ dh) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float g = act_grad(act, bf16_bits_to_f32(z[i]), bf16_bits_to_f32(h[i]));
        dh[i] = f32_to_bf16_bits(bf16_bits_to_f32(dh[i]) * g);
    }
}

// As act_backward_bf16 with n % 4 == 0 and 8-byte aligned pointers.
extern "C" __global__ void act_backward_bf16_v4(int act, long long n,
                                                const unsigned short *__restrict__ z,
                                                const unsigned short *__restrict__ h,
                                                unsigned short *__restrict__ dh) {
    long long n4 = n / 4;
    const bf16x4 *z4 = reinterpret_cast<const bf16x4 *>(z);
    const bf16x4 *h4 = reinterpret_cast<const bf16x4 *>(h);
    bf16x4 *d4 = reinterpret_cast<bf16x4 *>(dh);
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n4;
         i += (long long)gridDim.x * blockDim.x) {
        bf16x4 zz = z4[i], hh = h4[i], d = d4[i];
#define ACT_BWD_BF16(c)                                                                   \
    d.c = f32_to_bf16_bits(bf16_bits_to_f32(d.c) *                                       \
                           act_grad(act, bf16_bits_to_f32(zz.c), bf16_bits_to_f32(hh.c)))
        ACT_BWD_BF16(x);
        ACT_BWD_BF16(y);
        ACT_BWD_BF16(z);
        ACT_BWD_BF16(w);
#undef ACT_BWD_BF16
        d4[i] = d;
    }
}
