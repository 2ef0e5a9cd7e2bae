// The emulator's own test kernels (tests/emu.rs), compiled like
// kernels/*.cu but not listed by kernel_names(). Names must start with
// emu_selftest_ (build.rs checks).

// Every parameter kind: writes each argument's bits to out[0..6].
extern "C" __global__ void emu_selftest_args(int a, unsigned int b, long long c,
                                             unsigned long long d, float e,
                                             const float *__restrict__ f,
                                             unsigned long long *__restrict__ out) {
    if (threadIdx.x + blockIdx.x != 0) return;
    out[0] = (unsigned long long)(long long)a;
    out[1] = b;
    out[2] = (unsigned long long)c;
    out[3] = d;
    out[4] = __float_as_uint(e);
    out[5] = (unsigned long long)f;
}

// The order threads run in: each thread appends its linear block and thread
// index, before and after one barrier, to log[1..] (log[0] is the cursor).
extern "C" __global__ void emu_selftest_order(unsigned int *__restrict__ log) {
    unsigned int b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    unsigned int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    unsigned int nt = blockDim.x * blockDim.y * blockDim.z;
    unsigned int i = atomicAdd(&log[0], 1u);
    log[1 + i] = b * nt + t;
    __syncthreads();
    i = atomicAdd(&log[0], 1u);
    log[1 + i] = 0x80000000u | (b * nt + t);
}

// Thread 0 returns early; the others wait at a barrier: divergence.
extern "C" __global__ void emu_selftest_diverge(int *__restrict__ x) {
    if (threadIdx.x == 0) return;
    __syncthreads();
    x[threadIdx.x] = 1;
}

// Shared memory, many barriers: out[b * n + t] = value of thread n-1-t,
// passed around the block k times through shared memory.
extern "C" __global__ void emu_selftest_rotate(int k, const int *__restrict__ in,
                                               int *__restrict__ out) {
    __shared__ int sh[1024];
    unsigned int n = blockDim.x;
    unsigned int t = threadIdx.x;
    int v = in[blockIdx.x * n + t];
    for (int r = 0; r < k; ++r) {
        sh[t] = v;
        __syncthreads();
        v = sh[n - 1 - t];
        __syncthreads();
    }
    out[blockIdx.x * n + t] = v;
}
