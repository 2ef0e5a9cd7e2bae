// Masked task losses, forward and backward fused: each thread takes rows
// r, r + grid, ... (grid-stride), writes grad_scale · dℓ/d(output) into the
// task's columns of dout and adds the rows' losses; partial[blockIdx.x] gets
// the block's sum and reduce.cu's finish_sum_f32 adds the partials in a
// fixed order (the grid depends on `rows` only, so results are reproducible).
//
// A NaN label means "missing": the row contributes no loss and a zero
// gradient (regression: per label column). Formulas match
// src/backend/cpu.rs `row_loss` exactly. Block size 256 (LOSS_THREADS).

#include "block_sum.cuh"

#define LT BLOCK_THREADS

// Softmax cross-entropy over `classes` logits; the label is a class index.
extern "C" __global__ void softmax_ce_f32(long long rows, int classes,
                                          const float *__restrict__ out, long long out_cols,
                                          long long out_off,
                                          const float *__restrict__ labels, long long label_cols,
                                          long long label_off, float scale,
                                          float *__restrict__ dout,
                                          float *__restrict__ partial) {
    __shared__ float sh[LT];
    float loss = 0.0f;
    for (long long r = blockIdx.x * (long long)LT + threadIdx.x; r < rows;
         r += (long long)gridDim.x * LT) {
        const float *o = out + r * out_cols + out_off;
        float *d = dout + r * out_cols + out_off;
        float y = labels[r * label_cols + label_off];
        if (isnan(y)) {
            for (int j = 0; j < classes; ++j) d[j] = 0.0f;
        } else {
            int c = (int)y;
            float mx = -__int_as_float(0x7f800000); // -inf
            for (int j = 0; j < classes; ++j) mx = fmaxf(mx, o[j]);
            float sum = 0.0f;
            for (int j = 0; j < classes; ++j) sum += expf(o[j] - mx);
            for (int j = 0; j < classes; ++j) d[j] = expf(o[j] - mx) / sum * scale;
            d[c] = d[c] - scale;
            loss += logf(sum) + mx - o[c];
        }
    }
    float s = block_sum_256(loss, sh);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// Binary cross-entropy with logits (one output column, label 0/1).
extern "C" __global__ void bce_logits_f32(long long rows, const float *__restrict__ out,
                                          long long out_cols, long long out_off,
                                          const float *__restrict__ labels, long long label_cols,
                                          long long label_off, float scale,
                                          float *__restrict__ dout,
                                          float *__restrict__ partial) {
    __shared__ float sh[LT];
    float loss = 0.0f;
    for (long long r = blockIdx.x * (long long)LT + threadIdx.x; r < rows;
         r += (long long)gridDim.x * LT) {
        float x = out[r * out_cols + out_off];
        float y = labels[r * label_cols + label_off];
        float *d = dout + r * out_cols + out_off;
        if (isnan(y)) {
            d[0] = 0.0f;
        } else {
            float sig = 1.0f / (1.0f + expf(-x));
            d[0] = (sig - y) * scale;
            // Stable: max(x, 0) - x y + log(1 + e^-|x|).
            loss += fmaxf(x, 0.0f) - x * y + log1pf(expf(-fabsf(x)));
        }
    }
    float s = block_sum_256(loss, sh);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// Squared error over `dim` columns, each label column masked on its own.
extern "C" __global__ void mse_f32(long long rows, int dim, const float *__restrict__ out,
                                   long long out_cols, long long out_off,
                                   const float *__restrict__ labels, long long label_cols,
                                   long long label_off, float scale,
                                   float *__restrict__ dout, float *__restrict__ partial) {
    __shared__ float sh[LT];
    float loss = 0.0f;
    for (long long r = blockIdx.x * (long long)LT + threadIdx.x; r < rows;
         r += (long long)gridDim.x * LT) {
        const float *o = out + r * out_cols + out_off;
        const float *t = labels + r * label_cols + label_off;
        float *d = dout + r * out_cols + out_off;
        for (int j = 0; j < dim; ++j) {
            float y = t[j];
            if (isnan(y)) {
                d[j] = 0.0f;
            } else {
                float e = o[j] - y;
                loss += e * e;
                d[j] = 2.0f * e * scale;
            }
        }
    }
    float s = block_sum_256(loss, sh);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}
