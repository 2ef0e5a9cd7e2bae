// Fused optimizer updates, exactly as src/backend/cpu.rs `update`.
// The clip scale is computed on the device from the squared gradient norm
// in stats[norm_stat] (clip <= 0: no clipping), so no host round trip.

__device__ __forceinline__ float clip_scale(const float *stats, int norm_stat, float clip) {
    if (clip <= 0.0f) return 1.0f;
    float norm = sqrtf(stats[norm_stat]);
    return norm > clip ? clip / norm : 1.0f;
}

// PyTorch SGD: v = mu v + g + wd p (v = g + wd p when mu == 0 or on the
// first step); p -= lr v.
extern "C" __global__ void sgd_update_f32(long long n, float *__restrict__ p,
                                          const float *__restrict__ g, float *__restrict__ v,
                                          const float *__restrict__ stats, int norm_stat,
                                          float clip, float lr, float wd, float mu,
                                          int first_step) {
    float c = clip_scale(stats, norm_stat, clip);
    bool plain = (mu == 0.0f) || (first_step != 0);
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float pi = p[i];
        float gi = g[i] * c + wd * pi;
        float vi = plain ? gi : mu * v[i] + gi;
        v[i] = vi;
        p[i] = pi - lr * vi;
    }
}

// PyTorch AdamW: p -= lr wd p, then the Adam step with bias corrections
// bc1 = 1 - beta1^t, bc2 = 1 - beta2^t (computed on the host in f32).
// m = state[0..n], v = state[n..2n].
extern "C" __global__ void adamw_update_f32(long long n, float *__restrict__ p,
                                            const float *__restrict__ g,
                                            float *__restrict__ m, float *__restrict__ v,
                                            const float *__restrict__ stats, int norm_stat,
                                            float clip, float lr, float wd, float beta1,
                                            float beta2, float eps, float bc1, float bc2) {
    float c = clip_scale(stats, norm_stat, clip);
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float gi = g[i] * c;
        float pi = p[i];
        pi = pi - lr * wd * pi;
        float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float mhat = mi / bc1;
        float vhat = vi / bc2;
        p[i] = pi - lr * mhat / (sqrtf(vhat) + eps);
    }
}
