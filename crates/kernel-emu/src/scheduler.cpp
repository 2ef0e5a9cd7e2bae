// The cooperative scheduler: runs one launch on the calling OS thread.
//
// Blocks run one after another in grid order (z, y, x). The threads of a
// block are fibers, each on its own 64 KiB stack with a guard page below it
// (a stack overflow faults instead of corrupting a neighbour); stacks are
// kept per OS thread and reused by later blocks and launches. A block runs
// in passes: each pass resumes, in thread-index order (x fastest), every
// thread that is ready; a thread runs until it calls __syncthreads() or
// returns. After a pass, if some threads wait at a barrier: all of them are
// released when no thread of the block has returned, else it is barrier
// divergence (undefined behaviour in CUDA), reported as an error.
//
// Context switches: a few instructions of assembly on x86-64 (callee-saved
// registers, MXCSR and the x87 control word, then the stack pointer);
// ucontext elsewhere, or everywhere with -DKERNEL_EMU_UCONTEXT (in
// CXXFLAGS). ucontext is correct but slow: glibc's swapcontext makes a
// system call (the signal mask) on every switch.

#include "../emu_call.h"
#include "../cuda_emu.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#if defined(__x86_64__) && !defined(KERNEL_EMU_UCONTEXT)
#define KERNEL_EMU_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

// The body of every fiber (below); never returns.
extern "C" __attribute__((visibility("hidden"), noreturn)) void kernel_emu_fiber_main();

namespace kernel_emu {
namespace {

constexpr std::size_t STACK_BYTES = 64 * 1024;
constexpr unsigned MAX_THREADS = 1024;

#if KERNEL_EMU_ASM_SWITCH

// A suspended context is its stack pointer; the stack holds the rest.
struct Context {
    void *sp = nullptr;
};

}  // namespace
}  // namespace kernel_emu

// kernel_emu_switch(void **save, void *load): saves the callee-saved state
// on the current stack and its stack pointer in *save, then resumes the
// context whose stack pointer is load. kernel_emu_fiber_start: where a new
// fiber's first switch "returns" to; the end of its call stack.
asm(R"(
    .text
    .p2align 4
    .globl kernel_emu_switch
    .hidden kernel_emu_switch
    .type kernel_emu_switch, @function
kernel_emu_switch:
    .cfi_startproc
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .cfi_endproc
    .size kernel_emu_switch, .-kernel_emu_switch

    .p2align 4
    .globl kernel_emu_fiber_start
    .hidden kernel_emu_fiber_start
    .type kernel_emu_fiber_start, @function
kernel_emu_fiber_start:
    .cfi_startproc
    .cfi_undefined %rip
    xorl %ebp, %ebp
    call kernel_emu_fiber_main
    ud2
    .cfi_endproc
    .size kernel_emu_fiber_start, .-kernel_emu_fiber_start
)");

extern "C" void kernel_emu_switch(void **save, void *load);
extern "C" void kernel_emu_fiber_start();

namespace kernel_emu {
namespace {

// A context that starts kernel_emu_fiber_main on [stack, stack + size).
bool context_init(Context &c, char *stack, std::size_t size) {
    // From c.sp up: MXCSR and x87 control word (this thread's), r15, r14,
    // r13, r12, rbx, rbp (all 0), the "return address" fiber_start, then
    // 16 bytes of zeros. The stack pointer is 16-byte aligned after the
    // ret into fiber_start, as at a call site.
    uint64_t *top = reinterpret_cast<uint64_t *>(stack + size);
    uint64_t *sp = top - 10;
    uint32_t mxcsr;
    uint16_t fpcw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpcw));
    sp[0] = (uint64_t)mxcsr | ((uint64_t)fpcw << 32);
    for (int i = 1; i <= 6; ++i) sp[i] = 0;
    sp[7] = reinterpret_cast<uint64_t>(&kernel_emu_fiber_start);
    sp[8] = 0;
    sp[9] = 0;
    c.sp = sp;
    return true;
}

inline void context_switch(Context &save, Context &load) { kernel_emu_switch(&save.sp, load.sp); }

#else  // ucontext

struct Context {
    ucontext_t uc;
};

void fiber_entry() { kernel_emu_fiber_main(); }

// Its own function: getcontext "returns twice" as far as the compiler
// knows, which would pessimise (and warn about) a caller with a loop.
__attribute__((noinline)) bool context_init(Context &c, char *stack, std::size_t size) {
    if (getcontext(&c.uc) != 0) return false;
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = size;
    c.uc.uc_link = nullptr;  // fiber_main never returns
    makecontext(&c.uc, fiber_entry, 0);
    return true;
}

inline void context_switch(Context &save, Context &load) {
    if (swapcontext(&save.uc, &load.uc) != 0) {
        std::fputs("kernel-emu: swapcontext failed\n", stderr);
        std::abort();
    }
}

#endif

enum class State : unsigned char { Ready, AtBarrier, Done };

struct Fiber {
    Context ctx;
    State state;
};

// Stacks of this OS thread: mappings of guard page + STACK_BYTES.
struct StackPool {
    std::size_t page = 0;
    std::vector<char *> maps;

    std::size_t map_len() const { return page + STACK_BYTES; }

    // Makes sure there are at least n stacks; false when mmap fails.
    bool reserve(std::size_t n) {
        if (page == 0) page = (std::size_t)sysconf(_SC_PAGESIZE);
        while (maps.size() < n) {
            void *m = mmap(nullptr, map_len(), PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
            if (m == MAP_FAILED) return false;
            if (mprotect(m, page, PROT_NONE) != 0) {
                munmap(m, map_len());
                return false;
            }
            maps.push_back(static_cast<char *>(m));
        }
        return true;
    }
    // The usable part of stack i (above its guard page).
    char *stack(std::size_t i) const { return maps[i] + page; }

    ~StackPool() {
        for (char *m : maps) munmap(m, map_len());
    }
};

// The launch running on this OS thread.
struct Launch {
    Context sched;
    Fiber *fibers = nullptr;
    unsigned current = 0;
    void (*body)(void *) = nullptr;
    void *ctx = nullptr;
    bool threw = false;
    std::string what;
};

thread_local StackPool tl_stacks;
thread_local std::vector<Fiber> tl_fibers;
thread_local Launch *tl_launch = nullptr;

std::string dims_str(const unsigned v[3]) {
    return "(" + std::to_string(v[0]) + ", " + std::to_string(v[1]) + ", " +
           std::to_string(v[2]) + ")";
}

// CUDA's launch limits (compute capability >= 3.0).
std::string check_dims(const Dims *d) {
    const unsigned *g = d->grid, *b = d->block;
    for (int i = 0; i < 3; ++i) {
        if (g[i] == 0) return "grid " + dims_str(g) + ": every dimension must be at least 1";
        if (b[i] == 0) return "block " + dims_str(b) + ": every dimension must be at least 1";
    }
    if (g[0] > 2147483647u) return "grid " + dims_str(g) + ": x must be at most 2^31 - 1";
    if (g[1] > 65535u || g[2] > 65535u)
        return "grid " + dims_str(g) + ": y and z must be at most 65535";
    if (b[0] > 1024u || b[1] > 1024u || b[2] > 64u)
        return "block " + dims_str(b) + ": x and y must be at most 1024, z at most 64";
    unsigned long long n = (unsigned long long)b[0] * b[1] * b[2];
    if (n > MAX_THREADS)
        return "block " + dims_str(b) + ": " + std::to_string(n) +
               " threads, at most 1024 per block";
    return "";
}

struct LaunchGuard {
    explicit LaunchGuard(Launch *l) { tl_launch = l; }
    ~LaunchGuard() { tl_launch = nullptr; }
};

// Runs block blockIdx (already set) to completion; ST_OK or an error in e.
int run_block(Launch &l, unsigned nthreads, ErrInfo *e) {
    const unsigned bx = blockDim.x, by = blockDim.y;
    for (unsigned t = 0; t < nthreads; ++t) {
        if (!context_init(l.fibers[t].ctx, tl_stacks.stack(t), STACK_BYTES))
            return fail(e, ST_INTERNAL, "getcontext failed");
        l.fibers[t].state = State::Ready;
    }
    for (unsigned barrier = 0;; ++barrier) {
        for (unsigned t = 0; t < nthreads; ++t) {
            Fiber &f = l.fibers[t];
            if (f.state != State::Ready) continue;
            l.current = t;
            threadIdx = uint3{t % bx, (t / bx) % by, t / (bx * by)};
            context_switch(l.sched, f.ctx);
            if (l.threw)
                return fail(e, ST_INTERNAL,
                            "the kernel threw a C++ exception" +
                                (l.what.empty() ? std::string() : ": " + l.what));
        }
        unsigned waiting = 0, done = 0, first_done = 0, first_waiting = 0;
        for (unsigned t = 0; t < nthreads; ++t) {
            if (l.fibers[t].state == State::AtBarrier) {
                if (waiting++ == 0) first_waiting = t;
            } else {
                if (done++ == 0) first_done = t;
            }
        }
        if (waiting == 0) return ST_OK;
        if (done > 0) {
            auto tid = [&](unsigned t) {
                unsigned v[3] = {t % bx, (t / bx) % by, t / (bx * by)};
                return dims_str(v);
            };
            unsigned b[3] = {blockIdx.x, blockIdx.y, blockIdx.z};
            return fail(e, ST_DIVERGENCE,
                        "block " + dims_str(b) + ": at __syncthreads() number " +
                            std::to_string(barrier + 1) + ", " + std::to_string(waiting) +
                            " of " + std::to_string(nthreads) + " threads wait (first: thread " +
                            tid(first_waiting) + ") but " + std::to_string(done) +
                            " have returned (first: thread " + tid(first_done) +
                            "); every thread of a block must reach every barrier "
                            "(undefined behaviour on a GPU)");
        }
        for (unsigned t = 0; t < nthreads; ++t) l.fibers[t].state = State::Ready;
    }
}

}  // namespace

int run(const Dims *d, void (*body)(void *), void *ctx, ErrInfo *e) noexcept {
    try {
        std::string bad = check_dims(d);
        if (!bad.empty()) return fail(e, ST_BAD_DIMS, bad);
        if (tl_launch != nullptr) return fail(e, ST_INTERNAL, "launch from inside a kernel");
        const unsigned nthreads = d->block[0] * d->block[1] * d->block[2];
        if (!tl_stacks.reserve(nthreads))
            return fail(e, ST_INTERNAL, "could not map fiber stacks");
        if (tl_fibers.size() < nthreads) tl_fibers.resize(nthreads);

        Launch l;
        l.fibers = tl_fibers.data();
        l.body = body;
        l.ctx = ctx;
        LaunchGuard guard(&l);
        gridDim = dim3(d->grid[0], d->grid[1], d->grid[2]);
        blockDim = dim3(d->block[0], d->block[1], d->block[2]);
        for (unsigned z = 0; z < d->grid[2]; ++z) {
            for (unsigned y = 0; y < d->grid[1]; ++y) {
                for (unsigned x = 0; x < d->grid[0]; ++x) {
                    blockIdx = uint3{x, y, z};
                    int st = run_block(l, nthreads, e);
                    if (st != ST_OK) return st;
                }
            }
        }
        return ST_OK;
    } catch (const std::exception &x) {
        return fail(e, ST_INTERNAL, std::string("exception: ") + x.what());
    } catch (...) {
        return fail(e, ST_INTERNAL, "unknown exception");
    }
}

}  // namespace kernel_emu

// Runs the kernel as thread l->current, then hands control back to the
// scheduler for good (the stack is reused by a later fiber).
extern "C" void kernel_emu_fiber_main() {
    using namespace kernel_emu;
    Launch *l = tl_launch;
    try {
        l->body(l->ctx);
    } catch (const std::exception &x) {
        if (!l->threw) l->what = x.what();
        l->threw = true;
    } catch (...) {
        l->threw = true;
    }
    Fiber &f = l->fibers[l->current];
    f.state = State::Done;
    context_switch(f.ctx, l->sched);
    std::fputs("kernel-emu: a finished fiber was resumed\n", stderr);
    std::abort();
}

void __syncthreads() {
    using namespace kernel_emu;
    Launch *l = tl_launch;
    if (l == nullptr) {
        std::fputs("kernel-emu: __syncthreads() called outside a kernel launch\n", stderr);
        std::abort();
    }
    Fiber &f = l->fibers[l->current];
    f.state = State::AtBarrier;
    context_switch(f.ctx, l->sched);
}
