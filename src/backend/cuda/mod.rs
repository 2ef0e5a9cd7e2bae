//! The CUDA backend: the ops of [`Backend`] as cuBLAS GEMMs and the
//! kernels of `kernels/*.cu` (compiled by NVRTC at start for the device's
//! own architecture, cached on disk), all on one stream.
//!
//! Buffers are `CudaSlice<f32>`. Event tracking is switched off for the
//! context: every op runs on [`CudaBackend::stream`], so stream order is
//! the only synchronisation needed, and kernels take raw device pointers
//! (`CUdeviceptr` plus an element offset), like the CPU backend's
//! (buffer, offset) addressing. A CUDA error inside an op is a bug or a
//! broken device, not user input: it panics with the CUDA error (the panic
//! hook turns that into MPI_Abort). Set-up errors are returned.
//!
//! For another stream (NCCL): [`CudaBackend::stream`], [`CudaBackend::context`]
//! and [`CudaBackend::device_ptr`] give the compute stream, the context and
//! a buffer's raw `CUdeviceptr`; work on another stream must be ordered
//! against the compute stream with events, since buffers carry none.

pub mod kernels;
pub mod probe;
pub mod sync;

use std::sync::Arc;

use cudarc::cublas::{CudaBlas, sys as blas_sys};
use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};

use super::{Backend, Gemm, LossArgs, UpdateArgs, UpdateRule};
use crate::error::{Error, Result};
use crate::model::spec::Activation;
use crate::tasks::TaskKind;

/// Threads per block of the reduction and loss kernels (fixed in the .cu).
const REDUCE_THREADS: u32 = 256;
/// Blocks of the two-pass reductions: fixed, so sums never depend on timing.
const REDUCE_BLOCKS: u32 = 1024;
/// Threads per block of element-wise kernels.
const EW_THREADS: u32 = 256;

/// The loaded kernels.
struct Kernels {
    bias_act: CudaFunction,
    bias_act_v4: CudaFunction,
    act_backward: CudaFunction,
    act_backward_v4: CudaFunction,
    softmax_ce: CudaFunction,
    bce_logits: CudaFunction,
    mse: CudaFunction,
    sum_squares_partial: CudaFunction,
    finish_sum: CudaFunction,
    col_sum: CudaFunction,
    scale: CudaFunction,
    sgd: CudaFunction,
    adamw: CudaFunction,
    count_nonfinite: CudaFunction,
    f32_to_bf16: CudaFunction,
}

/// Options of the backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct CudaOptions {
    /// Let cuBLAS use TF32 tensor cores for f32 GEMMs (faster, ~1e-3
    /// relative error). Off by default; `RINGTRAIN_TF32=1` turns it on.
    pub tf32: bool,
    /// GEMM operands in bf16 (cast per GEMM), accumulation and output f32.
    pub bf16: bool,
}

impl CudaOptions {
    pub fn from_env() -> Self {
        CudaOptions {
            tf32: std::env::var("RINGTRAIN_TF32").is_ok_and(|v| v == "1"),
            bf16: false,
        }
    }
    pub fn with_precision(self, p: crate::backend::device::Precision) -> Self {
        CudaOptions {
            bf16: p == crate::backend::device::Precision::Bf16,
            ..self
        }
    }
}

pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    k: Kernels,
    /// Per-block partial sums of the two-pass reductions.
    partial: CudaSlice<f32>,
    /// One counter for the non-finite check.
    counter: CudaSlice<u32>,
    /// bf16 copies of the two GEMM operands (`--precision bf16`), grown
    /// as needed; stream order keeps reuse safe.
    bf16_scratch: std::cell::RefCell<[CudaSlice<u16>; 2]>,
    /// Grid cap of the element-wise kernels (grid-stride beyond it).
    max_blocks: u32,
    arch: String,
    device_name: String,
    opts: CudaOptions,
}

fn gpu_err(what: &str) -> impl Fn(String) -> Error + '_ {
    move |e| Error::Gpu(format!("{what}: {e}"))
}

impl CudaBackend {
    /// Opens device `ordinal`, compiles (or loads cached) kernels for its
    /// architecture and creates the stream and cuBLAS handle. Call only
    /// after [`probe::probe`] said the GPU is usable.
    pub fn new(ordinal: usize, opts: CudaOptions) -> Result<Self> {
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| gpu_err("open device")(format!("{ordinal}: {e}")))?;
        // SAFETY: before any buffer exists; every op runs on one stream,
        // and other streams (NCCL) synchronise through events they record.
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| gpu_err("compute capability")(e.to_string()))?;
        let arch = kernels::arch_for(major, minor);
        let device_name = ctx.name().unwrap_or_else(|_| "?".into());
        let sms = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .unwrap_or(80)
            .max(1) as u32;
        let stream = ctx
            .new_stream()
            .map_err(|e| gpu_err("create stream")(e.to_string()))?;
        let blas = CudaBlas::new(stream.clone()).map_err(|e| gpu_err("cuBLAS")(e.to_string()))?;
        let math = if opts.tf32 {
            blas_sys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
        } else {
            blas_sys::cublasMath_t::CUBLAS_DEFAULT_MATH
        };
        // SAFETY: a valid handle.
        unsafe { blas_sys::cublasSetMathMode(*blas.handle(), math) }
            .result()
            .map_err(|e| gpu_err("cuBLAS math mode")(e.to_string()))?;

        let include = kernels::include_paths_from_env();
        let mut funcs = std::collections::HashMap::new();
        for src in kernels::SOURCES {
            let ptx = kernels::ptx_cached(src, &arch, &include).map_err(gpu_err("NVRTC"))?;
            let module = ctx
                .load_module(ptx)
                .map_err(|e| gpu_err("load kernels")(format!("{}: {e}", src.file)))?;
            for &name in src.kernels {
                let f = module
                    .load_function(name)
                    .map_err(|e| gpu_err("load kernel")(format!("{name}: {e}")))?;
                funcs.insert(name, f);
            }
        }
        let mut take = |name: &str| {
            funcs
                .remove(name)
                .ok_or_else(|| Error::Gpu(format!("kernel {name} missing")))
        };
        let k = Kernels {
            bias_act: take("bias_act_f32")?,
            bias_act_v4: take("bias_act_f32_v4")?,
            act_backward: take("act_backward_f32")?,
            act_backward_v4: take("act_backward_f32_v4")?,
            softmax_ce: take("softmax_ce_f32")?,
            bce_logits: take("bce_logits_f32")?,
            mse: take("mse_f32")?,
            sum_squares_partial: take("sum_squares_partial_f32")?,
            finish_sum: take("finish_sum_f32")?,
            col_sum: take("col_sum_f32")?,
            scale: take("scale_f32")?,
            sgd: take("sgd_update_f32")?,
            adamw: take("adamw_update_f32")?,
            count_nonfinite: take("count_nonfinite_f32")?,
            f32_to_bf16: take("f32_to_bf16")?,
        };
        let partial = stream
            .alloc_zeros::<f32>(REDUCE_BLOCKS as usize)
            .map_err(|e| gpu_err("alloc")(e.to_string()))?;
        let counter = stream
            .alloc_zeros::<u32>(1)
            .map_err(|e| gpu_err("alloc")(e.to_string()))?;
        let one = || {
            stream
                .alloc_zeros::<u16>(1)
                .map_err(|e| gpu_err("alloc")(e.to_string()))
        };
        let bf16_scratch = std::cell::RefCell::new([one()?, one()?]);
        Ok(CudaBackend {
            ctx,
            stream,
            blas,
            k,
            partial,
            counter,
            bf16_scratch,
            max_blocks: sms * 32,
            arch,
            device_name,
            opts,
        })
    }

    /// The compute stream every op runs on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
    /// The raw device pointer of a buffer (element 0). Element `i` of an
    /// f32 buffer is at `device_ptr(buf) + 4 * i`. Valid while `buf` lives.
    pub fn device_ptr(&self, buf: &CudaSlice<f32>) -> CUdeviceptr {
        buf.device_ptr(&self.stream).0
    }
    /// Waits for all work queued on the stream.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| gpu_err("synchronize")(e.to_string()))
    }

    /// Number of NaN/Inf among the first `len` elements (synchronises).
    pub fn count_nonfinite(&self, x: &CudaSlice<f32>, len: usize) -> Result<u64> {
        let c = self.counter.device_ptr(&self.stream).0;
        // SAFETY: a 4-byte device buffer.
        unsafe { cudarc::driver::result::memset_d8_async(c, 0, 4, self.stream.cu_stream()) }
            .map_err(|e| gpu_err("memset")(e.to_string()))?;
        let (n, xp) = (len as i64, self.ptr(x, 0));
        let mut b = self.stream.launch_builder(&self.k.count_nonfinite);
        b.arg(&n).arg(&xp).arg(&c);
        // SAFETY: argument types match the kernel's signature.
        unsafe { b.launch(self.ew_cfg(len)) }.map_err(|e| gpu_err("launch")(e.to_string()))?;
        let mut out = [0u32];
        self.stream
            .memcpy_dtoh(&self.counter, &mut out)
            .map_err(|e| gpu_err("download")(e.to_string()))?;
        self.synchronize()?;
        Ok(out[0] as u64)
    }

    /// Casts `len` floats at device address `src` to bf16 in scratch `slot`
    /// (grown if needed); returns the bf16 copy's address.
    fn to_bf16(&self, slot: usize, src: u64, len: usize) -> u64 {
        let mut scratch = self.bf16_scratch.borrow_mut();
        if scratch[slot].len() < len {
            scratch[slot] = launched(self.stream.alloc_zeros::<u16>(len), "alloc bf16 scratch");
        }
        let dst = scratch[slot].device_ptr(&self.stream).0;
        let n = len as i64;
        let mut b = self.stream.launch_builder(&self.k.f32_to_bf16);
        b.arg(&n).arg(&src).arg(&dst);
        // SAFETY: argument types match the kernel's signature.
        launched(unsafe { b.launch(self.ew_cfg(len)) }, "f32_to_bf16");
        dst
    }

    /// The GEMM with bf16 operands, f32 accumulation and f32 output.
    fn gemm_bf16(
        &self,
        cm: &ColMajor,
        a: (u64, usize),
        b: (u64, usize),
        pc: u64,
        alpha: f32,
        beta: f32,
    ) {
        use blas_sys::cudaDataType::{CUDA_R_16BF, CUDA_R_32F};
        let first = self.to_bf16(0, b.0, b.1);
        let second = self.to_bf16(1, a.0, a.1);
        let op = |t: bool| {
            if t {
                blas_sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                blas_sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        // SAFETY: the bf16 copies hold the operands; C as checked by `gemm`.
        let r = unsafe {
            cudarc::cublas::result::gemm_ex(
                *self.blas.handle(),
                op(cm.trans_first),
                op(cm.trans_second),
                cm.m as i32,
                cm.n as i32,
                cm.k as i32,
                (&alpha as *const f32).cast(),
                first as *const std::ffi::c_void,
                CUDA_R_16BF,
                cm.ld_first as i32,
                second as *const std::ffi::c_void,
                CUDA_R_16BF,
                cm.ld_second as i32,
                (&beta as *const f32).cast(),
                pc as *mut std::ffi::c_void,
                CUDA_R_32F,
                cm.ldc as i32,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
            )
        };
        launched(r, "gemm_ex bf16");
    }

    fn ptr(&self, buf: &CudaSlice<f32>, off: usize) -> u64 {
        assert!(
            off <= buf.len(),
            "offset {off} beyond a buffer of {}",
            buf.len()
        );
        self.device_ptr(buf) + 4 * off as u64
    }

    fn ew_cfg(&self, n: usize) -> LaunchConfig {
        let blocks = n
            .div_ceil(EW_THREADS as usize)
            .clamp(1, self.max_blocks as usize) as u32;
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (EW_THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    fn reduce_cfg(n: usize, per_thread: usize) -> LaunchConfig {
        let blocks = n
            .div_ceil(REDUCE_THREADS as usize * per_thread)
            .clamp(1, REDUCE_BLOCKS as usize) as u32;
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (REDUCE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// stats[stat] = Σ partial[..blocks] (+ stats[stat] if accumulate).
    fn finish_sum(&self, blocks: u32, stats: &CudaSlice<f32>, stat: usize, accumulate: bool) {
        let (n, p, s) = (
            blocks as i32,
            self.ptr(&self.partial, 0),
            self.ptr(stats, 0),
        );
        let (stat, acc) = (stat as i32, accumulate as i32);
        let mut b = self.stream.launch_builder(&self.k.finish_sum);
        b.arg(&n).arg(&p).arg(&s).arg(&stat).arg(&acc);
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (REDUCE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: argument types match the kernel's signature.
        launched(unsafe { b.launch(cfg) }, "finish_sum");
    }
}

/// A row-major [`Gemm`] as the column-major BLAS call that computes it.
///
/// Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ, and a
/// row-major buffer read as column-major is the transpose: so the BLAS
/// call gets B's buffer first and A's second, each with its own transpose
/// flag, and the sizes (n, m, k). Leading dimensions are the row lengths
/// as stored (at least 1, which BLAS requires even when k = 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColMajor {
    pub trans_first: bool,
    pub trans_second: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub ld_first: usize,
    pub ld_second: usize,
    pub ldc: usize,
}

impl ColMajor {
    pub fn of(g: &Gemm) -> Self {
        ColMajor {
            trans_first: g.trans_b,
            trans_second: g.trans_a,
            m: g.n,
            n: g.m,
            k: g.k,
            ld_first: (if g.trans_b { g.k } else { g.n }).max(1),
            ld_second: (if g.trans_a { g.m } else { g.k }).max(1),
            ldc: g.n.max(1),
        }
    }
}

fn launched<T, E: std::fmt::Display>(r: std::result::Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("CUDA error in {what}: {e}"),
    }
}

/// Activation code of the kernels in act.cu.
fn act_code(act: Option<Activation>) -> i32 {
    match act {
        None => -1,
        Some(Activation::Relu) => 0,
        Some(Activation::Gelu) => 1,
        Some(Activation::Tanh) => 2,
    }
}

fn aligned16(p: u64) -> bool {
    p % 16 == 0
}

impl Backend for CudaBackend {
    type Buf = CudaSlice<f32>;

    fn name(&self) -> String {
        format!(
            "cuda {} ({}, {}{})",
            if self.opts.bf16 {
                "f32 with bf16 GEMM operands"
            } else {
                "f32"
            },
            self.device_name,
            self.arch,
            if self.opts.tf32 && !self.opts.bf16 {
                ", tf32"
            } else {
                ""
            }
        )
    }

    fn alloc(&self, len: usize) -> CudaSlice<f32> {
        // A zero-length cudaMalloc is not allowed; keep one element.
        launched(self.stream.alloc_zeros::<f32>(len.max(1)), "alloc")
    }

    fn upload(&self, src: &[f32], dst: &mut CudaSlice<f32>, off: usize) {
        if src.is_empty() {
            return;
        }
        let mut view = dst.slice_mut(off..off + src.len());
        launched(self.stream.memcpy_htod(src, &mut view), "upload");
    }

    fn download(&self, src: &CudaSlice<f32>, off: usize, dst: &mut [f32]) {
        if dst.is_empty() {
            return;
        }
        let view = src.slice(off..off + dst.len());
        launched(self.stream.memcpy_dtoh(&view, dst), "download");
        launched(self.stream.synchronize(), "download");
    }

    fn zero(&self, buf: &mut CudaSlice<f32>, off: usize, len: usize) {
        if len == 0 {
            return;
        }
        let mut view = buf.slice_mut(off..off + len);
        launched(self.stream.memset_zeros(&mut view), "zero");
    }

    fn gemm(&self, g: Gemm, a: &CudaSlice<f32>, b: &CudaSlice<f32>, c: &mut CudaSlice<f32>) {
        if g.m == 0 || g.n == 0 {
            return;
        }
        assert!(g.a_off + g.m * g.k <= a.len(), "gemm: A beyond its buffer");
        assert!(g.b_off + g.k * g.n <= b.len(), "gemm: B beyond its buffer");
        assert!(g.c_off + g.m * g.n <= c.len(), "gemm: C beyond its buffer");
        let cm = ColMajor::of(&g);
        let op = |t: bool| {
            if t {
                blas_sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                blas_sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let (pa, pb, pc) = (
            self.ptr(a, g.a_off),
            self.ptr(b, g.b_off),
            self.ptr(c, g.c_off),
        );
        let (alpha, beta) = (g.alpha, g.beta);
        if self.opts.bf16 {
            self.gemm_bf16(&cm, (pa, g.m * g.k), (pb, g.k * g.n), pc, alpha, beta);
            return;
        }
        // SAFETY: pointers into live buffers, extents checked above.
        let r = unsafe {
            cudarc::cublas::result::sgemm(
                *self.blas.handle(),
                op(cm.trans_first),
                op(cm.trans_second),
                cm.m as i32,
                cm.n as i32,
                cm.k as i32,
                &alpha,
                pb as *const f32,
                cm.ld_first as i32,
                pa as *const f32,
                cm.ld_second as i32,
                &beta,
                pc as *mut f32,
                cm.ldc as i32,
            )
        };
        launched(r, "sgemm");
    }

    fn bias_act(
        &self,
        act: Option<Activation>,
        rows: usize,
        cols: usize,
        bias: &CudaSlice<f32>,
        bias_off: usize,
        z: &mut CudaSlice<f32>,
        h: Option<&mut CudaSlice<f32>>,
    ) {
        let n = rows * cols;
        if n == 0 {
            return;
        }
        let pb = self.ptr(bias, bias_off);
        let pz = self.ptr(z, 0);
        let ph = match (act, h) {
            (Some(_), Some(h)) => self.ptr(h, 0),
            _ => 0u64,
        };
        let code = act_code(act);
        let v4 = cols % 4 == 0 && aligned16(pb) && aligned16(pz) && aligned16(ph);
        let (f, cfg) = if v4 {
            (&self.k.bias_act_v4, self.ew_cfg(n / 4))
        } else {
            (&self.k.bias_act, self.ew_cfg(n))
        };
        let (r, c) = (rows as i64, cols as i64);
        let mut b = self.stream.launch_builder(f);
        b.arg(&code).arg(&r).arg(&c).arg(&pb).arg(&pz).arg(&ph);
        // SAFETY: argument types match the kernel's signature.
        launched(unsafe { b.launch(cfg) }, "bias_act");
    }

    fn act_backward(
        &self,
        act: Activation,
        len: usize,
        z: &CudaSlice<f32>,
        h: &CudaSlice<f32>,
        dh: &mut CudaSlice<f32>,
    ) {
        if len == 0 {
            return;
        }
        let (pz, ph, pd) = (self.ptr(z, 0), self.ptr(h, 0), self.ptr(dh, 0));
        let code = act_code(Some(act));
        let v4 = len % 4 == 0 && aligned16(pz) && aligned16(ph) && aligned16(pd);
        let (f, cfg) = if v4 {
            (&self.k.act_backward_v4, self.ew_cfg(len / 4))
        } else {
            (&self.k.act_backward, self.ew_cfg(len))
        };
        let n = len as i64;
        let mut b = self.stream.launch_builder(f);
        b.arg(&code).arg(&n).arg(&pz).arg(&ph).arg(&pd);
        // SAFETY: argument types match the kernel's signature.
        launched(unsafe { b.launch(cfg) }, "act_backward");
    }

    fn col_sum(
        &self,
        rows: usize,
        cols: usize,
        x: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
        off: usize,
        beta: f32,
    ) {
        if cols == 0 {
            return;
        }
        let (px, po) = (self.ptr(x, 0), self.ptr(out, off));
        let (r, c) = (rows as i64, cols as i64);
        let cfg = LaunchConfig {
            grid_dim: (cols.div_ceil(32) as u32, 1, 1),
            block_dim: (32, 8, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.stream.launch_builder(&self.k.col_sum);
        b.arg(&r).arg(&c).arg(&px).arg(&po).arg(&beta);
        // SAFETY: argument types match the kernel's signature.
        launched(unsafe { b.launch(cfg) }, "col_sum");
    }

    fn task_loss(
        &self,
        a: LossArgs,
        out: &CudaSlice<f32>,
        labels: &CudaSlice<f32>,
        dout: &mut CudaSlice<f32>,
        stats: &mut CudaSlice<f32>,
    ) {
        let cfg = Self::reduce_cfg(a.rows, 1);
        let (po, pl, pd, pp) = (
            self.ptr(out, 0),
            self.ptr(labels, 0),
            self.ptr(dout, 0),
            self.ptr(&self.partial, 0),
        );
        let rows = a.rows as i64;
        let (oc, oo) = (a.out_cols as i64, a.out_off as i64);
        let (lc, lo) = (a.label_cols as i64, a.label_off as i64);
        let scale = a.grad_scale;
        let r = match a.kind {
            TaskKind::Classify { classes } => {
                let k = classes as i32;
                let mut b = self.stream.launch_builder(&self.k.softmax_ce);
                b.arg(&rows).arg(&k).arg(&po).arg(&oc).arg(&oo);
                b.arg(&pl).arg(&lc).arg(&lo).arg(&scale).arg(&pd).arg(&pp);
                // SAFETY: argument types match the kernel's signature.
                unsafe { b.launch(cfg) }
            }
            TaskKind::Binary => {
                let mut b = self.stream.launch_builder(&self.k.bce_logits);
                b.arg(&rows).arg(&po).arg(&oc).arg(&oo);
                b.arg(&pl).arg(&lc).arg(&lo).arg(&scale).arg(&pd).arg(&pp);
                // SAFETY: argument types match the kernel's signature.
                unsafe { b.launch(cfg) }
            }
            TaskKind::Regress { dim } => {
                let d = dim as i32;
                let mut b = self.stream.launch_builder(&self.k.mse);
                b.arg(&rows).arg(&d).arg(&po).arg(&oc).arg(&oo);
                b.arg(&pl).arg(&lc).arg(&lo).arg(&scale).arg(&pd).arg(&pp);
                // SAFETY: argument types match the kernel's signature.
                unsafe { b.launch(cfg) }
            }
        };
        launched(r, "task_loss");
        self.finish_sum(cfg.grid_dim.0, stats, a.stat, a.accumulate);
    }

    fn sum_squares(&self, x: &CudaSlice<f32>, len: usize, stats: &mut CudaSlice<f32>, stat: usize) {
        let cfg = Self::reduce_cfg(len, 4);
        let (n, px, pp) = (len as i64, self.ptr(x, 0), self.ptr(&self.partial, 0));
        let mut b = self.stream.launch_builder(&self.k.sum_squares_partial);
        b.arg(&n).arg(&px).arg(&pp);
        // SAFETY: argument types match the kernel's signature.
        launched(unsafe { b.launch(cfg) }, "sum_squares");
        self.finish_sum(cfg.grid_dim.0, stats, stat, false);
    }

    fn scale(&self, x: &mut CudaSlice<f32>, len: usize, s: f32) {
        if len == 0 {
            return;
        }
        let (n, px) = (len as i64, self.ptr(x, 0));
        let mut b = self.stream.launch_builder(&self.k.scale);
        b.arg(&n).arg(&px).arg(&s);
        // SAFETY: argument types match the kernel's signature.
        launched(unsafe { b.launch(self.ew_cfg(len)) }, "scale");
    }

    fn update(
        &self,
        a: UpdateArgs,
        len: usize,
        params: &mut CudaSlice<f32>,
        grads: &CudaSlice<f32>,
        state: &mut CudaSlice<f32>,
        stats: &CudaSlice<f32>,
    ) {
        if len == 0 {
            return;
        }
        let n = len as i64;
        let (pp, pg, ps) = (self.ptr(params, 0), self.ptr(grads, 0), self.ptr(stats, 0));
        let stat = a.norm_sq_stat as i32;
        // clip <= 0 means none (a clip norm of 0 is rejected by the config).
        let clip = a.clip.unwrap_or(0.0);
        let (lr, wd) = (a.lr, a.weight_decay);
        let cfg = self.ew_cfg(len);
        let r = match a.rule {
            UpdateRule::Sgd {
                momentum,
                first_step,
            } => {
                let pv = self.ptr(state, 0);
                let first = first_step as i32;
                let mut b = self.stream.launch_builder(&self.k.sgd);
                b.arg(&n).arg(&pp).arg(&pg).arg(&pv).arg(&ps).arg(&stat);
                b.arg(&clip).arg(&lr).arg(&wd).arg(&momentum).arg(&first);
                // SAFETY: argument types match the kernel's signature.
                unsafe { b.launch(cfg) }
            }
            UpdateRule::AdamW {
                beta1,
                beta2,
                eps,
                step,
            } => {
                assert!(state.len() >= 2 * len, "AdamW state holds m and v");
                let (pm, pv) = (self.ptr(state, 0), self.ptr(state, len));
                // As the CPU backend: 1 - β^t in f32.
                let bc1 = 1.0 - beta1.powi(step as i32);
                let bc2 = 1.0 - beta2.powi(step as i32);
                let mut b = self.stream.launch_builder(&self.k.adamw);
                b.arg(&n)
                    .arg(&pp)
                    .arg(&pg)
                    .arg(&pm)
                    .arg(&pv)
                    .arg(&ps)
                    .arg(&stat);
                b.arg(&clip)
                    .arg(&lr)
                    .arg(&wd)
                    .arg(&beta1)
                    .arg(&beta2)
                    .arg(&eps);
                b.arg(&bc1).arg(&bc2);
                // SAFETY: argument types match the kernel's signature.
                unsafe { b.launch(cfg) }
            }
        };
        launched(r, "update");
    }
}

#[cfg(test)]
mod tests {
    //! The row-major → column-major GEMM mapping, checked on the host with
    //! a plain column-major BLAS-semantics GEMM against the CPU backend.
    use super::*;
    use crate::backend::cpu::Cpu;

    /// C = alpha op(A) op(B) + beta C, column-major, as BLAS defines it.
    #[allow(clippy::too_many_arguments)]
    fn blas_gemm(cm: &ColMajor, alpha: f64, a: &[f64], b: &[f64], beta: f64, c: &mut [f64]) {
        let at = |i: usize, l: usize| {
            if cm.trans_first {
                a[l + i * cm.ld_first]
            } else {
                a[i + l * cm.ld_first]
            }
        };
        let bt = |l: usize, j: usize| {
            if cm.trans_second {
                b[j + l * cm.ld_second]
            } else {
                b[l + j * cm.ld_second]
            }
        };
        for j in 0..cm.n {
            for i in 0..cm.m {
                let s: f64 = (0..cm.k).map(|l| at(i, l) * bt(l, j)).sum();
                let o = &mut c[i + j * cm.ldc];
                *o = alpha * s + if beta == 0.0 { 0.0 } else { beta * *o };
            }
        }
    }

    #[test]
    fn column_major_mapping_computes_the_row_major_gemm() {
        let cpu = Cpu::<f64>::new();
        let rnd = |n: usize, s: u64| -> Vec<f64> {
            (0..n).map(|i| crate::rng::normal(5, s, i as u64)).collect()
        };
        for (m, n, k) in [(3, 5, 4), (1, 7, 2), (6, 1, 3), (4, 4, 1)] {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                let g = Gemm {
                    alpha: 0.5,
                    beta: 2.0,
                    ..Gemm::new(m, n, k, ta, tb)
                };
                let (a, b, c0) = (rnd(m * k, 1), rnd(k * n, 2), rnd(m * n, 3));
                let mut want = c0.clone();
                cpu.gemm(g, &a, &b, &mut want);
                let mut got = c0.clone();
                blas_gemm(&ColMajor::of(&g), 0.5, &b, &a, 2.0, &mut got);
                for (x, y) in got.iter().zip(&want) {
                    assert!((x - y).abs() < 1e-12, "{m}x{n}x{k} ta={ta} tb={tb}");
                }
            }
        }
    }
}
