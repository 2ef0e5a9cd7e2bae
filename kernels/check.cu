// Non-finite check: count[0] += number of NaN/Inf elements of x[0..n].
// Integer atomics only (one per block), so the count is exact.

extern "C" __global__ void count_nonfinite_f32(long long n, const float *__restrict__ x,
                                               unsigned int *__restrict__ count) {
    __shared__ unsigned int sh;
    if (threadIdx.x == 0) sh = 0;
    __syncthreads();
    unsigned int local = 0;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        if (!isfinite(x[i])) ++local;
    }
    if (local) atomicAdd(&sh, local);
    __syncthreads();
    if (threadIdx.x == 0 && sh) atomicAdd(count, sh);
}
