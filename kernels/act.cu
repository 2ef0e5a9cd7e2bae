// Bias + activation forward and activation backward, fused.
//
// Activation codes (src/backend/gpu/mod.rs `act_code`): -1 none, 0 relu,
// 1 gelu (tanh form), 2 tanh. Formulas match src/backend/cpu.rs
// `act_fwd`/`act_grad` exactly. Element-wise, grid-stride.
//
// Each operation is written once, as a template over the storage type
// (float, or bf16 as its 16 raw bits for --precision bf16, always computed
// in f32) and the width W (1, or 4: one float4 / 8-byte bf16x4 access per
// step, used when the host has checked that every length is a multiple of
// 4 and every pointer aligned). The extern "C" kernels at the end are its
// instantiations, with the names the host launches:
// bias_act_{f32,bf16}[_v4] and act_backward_{f32,bf16}[_v4].

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

// W consecutive elements, in f32.
template <int W> struct Floats {
    float v[W];
};

// Group i (elements W·i .. W·i + W − 1) of an array of T, as f32, in one
// access; and the store back (rounded to bf16 for bf16 storage).
template <class T, int W> struct Io;

template <> struct Io<float, 1> {
    static __device__ __forceinline__ Floats<1> load(const float *p, long long i) {
        Floats<1> f;
        f.v[0] = p[i];
        return f;
    }
    static __device__ __forceinline__ void store(float *p, long long i, const Floats<1> &f) {
        p[i] = f.v[0];
    }
};

template <> struct Io<float, 4> {
    static __device__ __forceinline__ Floats<4> load(const float *p, long long i) {
        float4 a = reinterpret_cast<const float4 *>(p)[i];
        Floats<4> f;
        f.v[0] = a.x; f.v[1] = a.y; f.v[2] = a.z; f.v[3] = a.w;
        return f;
    }
    static __device__ __forceinline__ void store(float *p, long long i, const Floats<4> &f) {
        float4 a;
        a.x = f.v[0]; a.y = f.v[1]; a.z = f.v[2]; a.w = f.v[3];
        reinterpret_cast<float4 *>(p)[i] = a;
    }
};

template <> struct Io<unsigned short, 1> {
    static __device__ __forceinline__ Floats<1> load(const unsigned short *p, long long i) {
        Floats<1> f;
        f.v[0] = bf16_bits_to_f32(p[i]);
        return f;
    }
    static __device__ __forceinline__ void store(unsigned short *p, long long i,
                                                 const Floats<1> &f) {
        p[i] = f32_to_bf16_bits(f.v[0]);
    }
};

template <> struct Io<unsigned short, 4> {
    static __device__ __forceinline__ Floats<4> load(const unsigned short *p, long long i) {
        bf16x4 a = reinterpret_cast<const bf16x4 *>(p)[i];
        Floats<4> f;
        f.v[0] = bf16_bits_to_f32(a.x); f.v[1] = bf16_bits_to_f32(a.y);
        f.v[2] = bf16_bits_to_f32(a.z); f.v[3] = bf16_bits_to_f32(a.w);
        return f;
    }
    static __device__ __forceinline__ void store(unsigned short *p, long long i,
                                                 const Floats<4> &f) {
        bf16x4 a;
        a.x = f32_to_bf16_bits(f.v[0]); a.y = f32_to_bf16_bits(f.v[1]);
        a.z = f32_to_bf16_bits(f.v[2]); a.w = f32_to_bf16_bits(f.v[3]);
        reinterpret_cast<bf16x4 *>(p)[i] = a;
    }
};

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
// The activation is taken of the f32 sum, before z is stored (and rounded).
template <class T, int W>
__device__ __forceinline__ void bias_act(int act, long long rows, long long cols,
                                         const float *__restrict__ bias, T *__restrict__ z,
                                         T *__restrict__ h) {
    long long n = rows * cols / W;
    long long i0 = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    long long stride = (long long)gridDim.x * blockDim.x;
    ColumnOf col(i0, stride, cols / W);
    for (long long i = i0; i < n; i += stride, col.advance()) {
        Floats<W> v = Io<T, W>::load(z, i);
        Floats<W> b = Io<float, W>::load(bias, col.c);
        for (int k = 0; k < W; ++k) v.v[k] += b.v[k];
        Io<T, W>::store(z, i, v);
        if (h != nullptr && act >= 0) {
            for (int k = 0; k < W; ++k) v.v[k] = act_fwd(act, v.v[k]);
            Io<T, W>::store(h, i, v);
        }
    }
}

// dh[i] *= act'(z[i]) (h = act(z) given too).
template <class T, int W>
__device__ __forceinline__ void act_backward(int act, long long n, const T *__restrict__ z,
                                             const T *__restrict__ h, T *__restrict__ dh) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n / W;
         i += (long long)gridDim.x * blockDim.x) {
        Floats<W> zz = Io<T, W>::load(z, i), hh = Io<T, W>::load(h, i);
        Floats<W> d = Io<T, W>::load(dh, i);
        for (int k = 0; k < W; ++k) d.v[k] *= act_grad(act, zz.v[k], hh.v[k]);
        Io<T, W>::store(dh, i, d);
    }
}

// The instantiations the host launches (written out, not generated by a
// macro: the kernel emulator and the NVRTC test find kernels by their
// `extern "C" __global__ void NAME(` text).

extern "C" __global__ void bias_act_f32(int act, long long rows, long long cols,
                                        const float *__restrict__ bias, float *__restrict__ z,
                                        float *__restrict__ h) {
    bias_act<float, 1>(act, rows, cols, bias, z, h);
}

// cols % 4 == 0 and 16-byte aligned pointers.
extern "C" __global__ void bias_act_f32_v4(int act, long long rows, long long cols,
                                           const float *__restrict__ bias,
                                           float *__restrict__ z, float *__restrict__ h) {
    bias_act<float, 4>(act, rows, cols, bias, z, h);
}

extern "C" __global__ void bias_act_bf16(int act, long long rows, long long cols,
                                         const float *__restrict__ bias,
                                         unsigned short *__restrict__ z,
                                         unsigned short *__restrict__ h) {
    bias_act<unsigned short, 1>(act, rows, cols, bias, z, h);
}

// cols % 4 == 0, z and h 8-byte and bias 16-byte aligned.
extern "C" __global__ void bias_act_bf16_v4(int act, long long rows, long long cols,
                                            const float *__restrict__ bias,
                                            unsigned short *__restrict__ z,
                                            unsigned short *__restrict__ h) {
    bias_act<unsigned short, 4>(act, rows, cols, bias, z, h);
}

extern "C" __global__ void act_backward_f32(int act, long long n, const float *__restrict__ z,
                                            const float *__restrict__ h,
                                            float *__restrict__ dh) {
    act_backward<float, 1>(act, n, z, h, dh);
}

// n % 4 == 0 and 16-byte aligned pointers.
extern "C" __global__ void act_backward_f32_v4(int act, long long n, const float *__restrict__ z,
                                               const float *__restrict__ h,
                                               float *__restrict__ dh) {
    act_backward<float, 4>(act, n, z, h, dh);
}

extern "C" __global__ void act_backward_bf16(int act, long long n,
                                             const unsigned short *__restrict__ z,
                                             const unsigned short *__restrict__ h,
                                             unsigned short *__restrict__ dh) {
    act_backward<unsigned short, 1>(act, n, z, h, dh);
}

// n % 4 == 0 and 8-byte aligned pointers.
extern "C" __global__ void act_backward_bf16_v4(int act, long long n,
                                                const unsigned short *__restrict__ z,
                                                const unsigned short *__restrict__ h,
                                                unsigned short *__restrict__ dh) {
    act_backward<unsigned short, 4>(act, n, z, h, dh);
}
