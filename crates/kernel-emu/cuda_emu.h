// cuda_emu.h: the subset of CUDA C++ that ringtrain's kernels use, as host
// C++17, so that kernels/*.cu compile with g++/clang++ and run on the CPU
// under the cooperative scheduler in src/scheduler.cpp.
//
// Execution model: a launch runs on the calling OS thread. Blocks run one
// after another in grid order (z, then y, then x), and the threads of a
// block run as fibers, in thread-index order (x fastest) between barriers.
// __syncthreads() suspends the calling fiber; when every thread of the block
// has reached the barrier, all of them are released. So the memory model is
// plain sequential execution: there are no data races to observe, and code
// that is racy on a GPU may well look correct here.
//
// Deliberately NOT provided (a kernel that uses one of these fails to
// compile, rather than run with semantics that are not the GPU's):
//   - warp-level primitives: warpSize, __shfl*_sync, __ballot_sync,
//     __all_sync/__any_sync, __activemask, __syncwarp, cooperative groups.
//     Warps do not exist here (threads of a block do not run in lockstep).
//   - __syncthreads_count/_and/_or, __threadfence*, memory fences/scopes.
//   - dynamic shared memory (extern __shared__), clock(), printf-style
//     device intrinsics, textures/surfaces, half/bfloat16 types
//     (cuda_fp16.h, cuda_bf16.h), fast-math intrinsics (__expf, __fdividef,
//     ...) whose precision differs from the library functions.
//   - min/max overloads of the CUDA device math library.
// Add one here only with its real semantics.
//
// Numerics: the math functions are the host libm's (correctly rounded or
// within 1 ulp for glibc), and the build uses -ffp-contract=off, so a*b+c is
// never fused. NVRTC fuses multiply-adds by default and CUDA's expf/tanhf/...
// are within 2 ulp: results are close to the GPU's, not bit-identical.

#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

// Function-space and inlining qualifiers. Every function is a host function.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
// __restrict__ is a GNU C++ keyword already (same meaning as in CUDA).

// Shared memory: one instance per OS thread. A block's threads are fibers
// on the launching OS thread, and blocks run one after another, so each
// block sees "its own" shared memory; launches on different OS threads do
// not collide. Unlike on a GPU, the contents persist from one block (and
// launch) to the next, and static shared variables start zeroed.
#define __shared__ static thread_local

struct uint3 {
    unsigned int x, y, z;
};

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
        : x(vx), y(vy), z(vz) {}
};

// Set by the scheduler before each fiber (thread) resumes.
extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;

// Block-wide barrier (src/scheduler.cpp). Out of line on purpose: the
// compiler must assume it reads and writes any memory (shared included).
void __syncthreads();

struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) float2 {
    float x, y;
};

inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline float2 make_float2(float x, float y) { return float2{x, y}; }

// Bit casts.
inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}
inline float __uint_as_float(unsigned int u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}
inline int __float_as_int(float f) {
    int i;
    std::memcpy(&i, &f, sizeof i);
    return i;
}
inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, sizeof f);
    return f;
}

// Math: <cmath> declares expf, logf, log1pf, tanhf, sqrtf, fmaxf, fminf,
// fabsf, ... in the global namespace (as CUDA's device library does); the
// classification functions are std:: templates, so bring them in (isnan on
// a float must not go through a double or a C macro).
using std::isfinite;
using std::isinf;
using std::isnan;
using std::signbit;

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

// Atomics. Every thread of a launch runs on one OS thread, one at a time,
// and never switches in the middle of an atomic: a plain read-modify-write
// is atomic here. Returns the old value, as CUDA does.
inline unsigned int atomicAdd(unsigned int *address, unsigned int val) {
    unsigned int old = *address;
    *address = old + val;
    return old;
}
inline int atomicAdd(int *address, int val) {
    // Wrap-around like the GPU's two's complement add (no signed overflow UB).
    int old = *address;
    *address = (int)((unsigned int)old + (unsigned int)val);
    return old;
}
inline float atomicAdd(float *address, float val) {
    float old = *address;
    *address = old + val;
    return old;
}
