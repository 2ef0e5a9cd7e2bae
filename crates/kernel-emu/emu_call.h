// emu_call.h: the C++ side of a launch. build.rs generates one wrapper
// translation unit per kernel file:
//
//     #include "emu_call.h"
//     #include "cuda_emu.h"
//     #include ".../kernels/X.cu"
//     extern "C" int kernel_emu_thunk__NAME(...) { return kernel_emu::call(&NAME, ...); }
//
// kernel_emu::call checks the arguments against the kernel's C parameter
// types (a type trait per type, so the check follows the compiler's view of
// the signature, not a parse of it), unpacks them, and hands the kernel to
// the scheduler (src/scheduler.cpp). Nothing here throws across the
// extern "C" boundary: errors are a status code plus an ErrInfo.
//
// The structs below are mirrored #[repr(C)] in src/lib.rs.

#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

struct float4;
struct float2;

namespace kernel_emu {

enum Tag : uint32_t { TAG_I32 = 0, TAG_I64 = 1, TAG_F32 = 2, TAG_PTR = 3 };

struct RawArg {
    uint32_t tag;
    uint32_t pad;
    uint64_t bits;  // I32/F32: the low 32 bits; I64: all; PTR: the address
};

struct Dims {
    uint32_t grid[3];
    uint32_t block[3];
};

enum Status : int32_t {
    ST_OK = 0,
    ST_ARG_COUNT = 2,
    ST_ARG_TYPE = 3,
    ST_BAD_DIMS = 4,
    ST_DIVERGENCE = 5,
    ST_INTERNAL = 6,
};

struct ErrInfo {
    int32_t status;
    uint32_t index;     // ST_ARG_TYPE: the parameter's index
    uint64_t expected;  // ST_ARG_COUNT: how many parameters the kernel takes
    char c_type[64];    // ST_ARG_TYPE: the parameter's C type
    char message[512];  // ST_BAD_DIMS, ST_DIVERGENCE, ST_INTERNAL
};

// Copies s (truncated, NUL-terminated) into a fixed buffer.
template <std::size_t N>
inline void set_text(char (&dst)[N], const std::string &s) {
    std::size_t n = s.size() < N - 1 ? s.size() : N - 1;
    std::memcpy(dst, s.data(), n);
    dst[n] = '\0';
}

inline int fail(ErrInfo *e, Status st, const std::string &msg) {
    e->status = st;
    set_text(e->message, msg);
    return st;
}

// The C spelling of a type, for error messages.
template <class T>
struct TypeName {
    static std::string get() { return "<unnamed type>"; }
};
#define KERNEL_EMU_TYPE_NAME(T)                   \
    template <>                                   \
    struct TypeName<T> {                          \
        static std::string get() { return #T; }   \
    };
KERNEL_EMU_TYPE_NAME(void)
KERNEL_EMU_TYPE_NAME(bool)
KERNEL_EMU_TYPE_NAME(char)
KERNEL_EMU_TYPE_NAME(signed char)
KERNEL_EMU_TYPE_NAME(unsigned char)
KERNEL_EMU_TYPE_NAME(short)
KERNEL_EMU_TYPE_NAME(unsigned short)
KERNEL_EMU_TYPE_NAME(int)
KERNEL_EMU_TYPE_NAME(unsigned int)
KERNEL_EMU_TYPE_NAME(long)
KERNEL_EMU_TYPE_NAME(unsigned long)
KERNEL_EMU_TYPE_NAME(long long)
KERNEL_EMU_TYPE_NAME(unsigned long long)
KERNEL_EMU_TYPE_NAME(float)
KERNEL_EMU_TYPE_NAME(double)
KERNEL_EMU_TYPE_NAME(float2)
KERNEL_EMU_TYPE_NAME(float4)
#undef KERNEL_EMU_TYPE_NAME
template <class T>
struct TypeName<const T> {
    static std::string get() { return "const " + TypeName<T>::get(); }
};
template <class T>
struct TypeName<volatile T> {
    static std::string get() { return "volatile " + TypeName<T>::get(); }
};
template <class T>
struct TypeName<const volatile T> {
    static std::string get() { return "const volatile " + TypeName<T>::get(); }
};
template <class T>
struct TypeName<T *> {
    static std::string get() { return TypeName<T>::get() + " *"; }
};

// Which Arg a kernel parameter type takes, and how to unpack it. A
// parameter type not listed here is a compile error in the wrapper, on
// purpose: add it with the Arg kind whose bytes the GPU launch would pass.
template <class T>
struct Param {
    static_assert(sizeof(T) == 0,
                  "kernel-emu: unsupported kernel parameter type (see Param in "
                  "crates/kernel-emu/emu_call.h)");
};
template <>
struct Param<int> {
    static constexpr Tag tag = TAG_I32;
    static int get(uint64_t b) { return (int)(uint32_t)b; }
};
template <>
struct Param<unsigned int> {
    static constexpr Tag tag = TAG_I32;
    static unsigned int get(uint64_t b) { return (uint32_t)b; }
};
template <>
struct Param<long long> {
    static constexpr Tag tag = TAG_I64;
    static long long get(uint64_t b) { return (long long)b; }
};
template <>
struct Param<unsigned long long> {
    static constexpr Tag tag = TAG_I64;
    static unsigned long long get(uint64_t b) { return b; }
};
template <>
struct Param<float> {
    static constexpr Tag tag = TAG_F32;
    static float get(uint64_t b) {
        uint32_t u = (uint32_t)b;
        float f;
        std::memcpy(&f, &u, sizeof f);
        return f;
    }
};
template <class T>
struct Param<T *> {
    static constexpr Tag tag = TAG_PTR;
    static T *get(uint64_t b) { return reinterpret_cast<T *>(static_cast<uintptr_t>(b)); }
};

// The scheduler (src/scheduler.cpp): runs body(ctx) as every thread of the
// grid. Returns ST_OK or fills e.
int run(const Dims *d, void (*body)(void *), void *ctx, ErrInfo *e) noexcept;

template <class... P, std::size_t... I>
std::tuple<P...> unpack(const RawArg *a, std::index_sequence<I...>) {
    return std::tuple<P...>(Param<P>::get(a[I].bits)...);
}

template <class... P>
int call(void (*kernel)(P...), const RawArg *args, std::size_t n, const Dims *d,
         ErrInfo *e) noexcept {
    try {
        constexpr std::size_t N = sizeof...(P);
        if (n != N) {
            e->status = ST_ARG_COUNT;
            e->expected = N;
            return ST_ARG_COUNT;
        }
        if constexpr (N > 0) {
            const Tag tags[N] = {Param<P>::tag...};
            std::string (*const names[N])() = {&TypeName<P>::get...};
            for (std::size_t i = 0; i < N; ++i) {
                if (args[i].tag != tags[i]) {
                    e->status = ST_ARG_TYPE;
                    e->index = (uint32_t)i;
                    set_text(e->c_type, names[i]());
                    return ST_ARG_TYPE;
                }
            }
        }
        struct Ctx {
            void (*kernel)(P...);
            std::tuple<P...> vals;
        } ctx{kernel, unpack<P...>(args, std::index_sequence_for<P...>{})};
        return run(
            d, [](void *p) {
                Ctx *c = static_cast<Ctx *>(p);
                std::apply(c->kernel, c->vals);
            },
            &ctx, e);
    } catch (const std::exception &x) {
        return fail(e, ST_INTERNAL, std::string("exception: ") + x.what());
    } catch (...) {
        return fail(e, ST_INTERNAL, "unknown exception");
    }
}

}  // namespace kernel_emu
