//! The GPU backend: the ops of [`Backend`] as GEMMs and the kernels of
//! `kernels/*.cu`, written once against a [`GpuRuntime`] (cudarc on a real
//! GPU, a CPU emulator of the kernels in the tests).
//!
//! Buffers are runtime allocations of f32; kernels take device addresses
//! plus element offsets, like the CPU backend's (buffer, offset)
//! addressing. Everything is queued on the runtime's one stream, so stream
//! order is the only synchronisation an op needs; the host waits only in
//! `download`. Launch shapes are fixed by the sizes alone, so reductions
//! add in the same order every run (bit-reproducible).

pub mod runtime;

use std::cell::RefCell;

pub use runtime::{Arg, Dtype, GpuRuntime, Launch};

use super::{Backend, Gemm, LossArgs, Memory, UpdateArgs, UpdateRule};
use crate::spec::Activation;
use crate::tasks::TaskKind;

/// Threads per block of the reduction and loss kernels (fixed in the .cu).
pub const REDUCE_THREADS: u32 = 256;
/// Blocks of the two-pass reductions: fixed, so sums never depend on timing.
pub const REDUCE_BLOCKS: u32 = 1024;
/// Threads per block of element-wise kernels.
pub const EW_THREADS: u32 = 256;

/// Options of the backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct GpuOptions {
    /// Let cuBLAS use TF32 tensor cores for f32 GEMMs (faster, ~1e-3
    /// relative error). Off by default; `RINGTRAIN_TF32=1` turns it on.
    pub tf32: bool,
    /// `--precision bf16`: activations stored in bf16 and GEMM operands in
    /// bf16 (f32 weights cast per GEMM); accumulation, weights, gradients,
    /// optimizer state, the head outputs and the losses stay f32.
    pub bf16: bool,
}

impl GpuOptions {
    pub fn from_env() -> Self {
        GpuOptions {
            tf32: std::env::var("RINGTRAIN_TF32").is_ok_and(|v| v == "1"),
            bf16: false,
        }
    }
    pub fn with_precision(self, p: crate::backend::device::Precision) -> Self {
        GpuOptions {
            bf16: p == crate::backend::device::Precision::Bf16,
            ..self
        }
    }
}

/// A buffer of the GPU backend: an allocation and its element type.
/// Parameters, gradients, optimizer state, inputs, head outputs and stats
/// are f32; activations are bf16 under `--precision bf16`.
pub struct GpuBuf<M> {
    pub mem: M,
    /// Elements (of `dtype`).
    pub len: usize,
    pub dtype: Dtype,
}

/// The bf16 copy of the parameters (`--precision bf16`): the buffer the
/// optimizer updates is cast once after each change, not once per GEMM
/// that reads a weight.
struct ParamsBf16<M> {
    /// Address and length of the f32 parameter buffer.
    src: u64,
    len: usize,
    copy: M,
    /// The copy equals the parameters (nothing wrote them since the cast).
    fresh: bool,
}

pub struct GpuBackend<R: GpuRuntime> {
    rt: R,
    /// Per-block partial sums of the two-pass reductions.
    partial: GpuBuf<R::Mem>,
    /// One u32 counter for the non-finite check (in an f32 allocation).
    counter: GpuBuf<R::Mem>,
    /// bf16 copies of the two GEMM operands (`--precision bf16`), grown as
    /// needed (two bf16 per f32 element); stream order keeps reuse safe.
    bf16_scratch: RefCell<[R::Mem; 2]>,
    /// The per-slice column sums of `col_sum` (grown as needed; stream
    /// order keeps reuse safe).
    col_partial: RefCell<R::Mem>,
    /// Set by the first `update` under `--precision bf16`.
    params_bf16: RefCell<Option<ParamsBf16<R::Mem>>>,
    /// Grid cap of the element-wise kernels (grid-stride beyond it).
    max_blocks: u32,
    opts: GpuOptions,
}

impl<R: GpuRuntime> GpuBackend<R> {
    pub fn with_runtime(rt: R, opts: GpuOptions) -> Self {
        GpuBackend {
            partial: GpuBuf {
                mem: rt.alloc(REDUCE_BLOCKS as usize),
                len: REDUCE_BLOCKS as usize,
                dtype: Dtype::F32,
            },
            counter: GpuBuf {
                mem: rt.alloc(1),
                len: 1,
                dtype: Dtype::F32,
            },
            bf16_scratch: RefCell::new([rt.alloc(1), rt.alloc(1)]),
            col_partial: RefCell::new(rt.alloc(1)),
            params_bf16: RefCell::new(None),
            max_blocks: rt.sm_count().max(1) * 32,
            opts,
            rt,
        }
    }

    pub fn runtime(&self) -> &R {
        &self.rt
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) {
        self.rt.synchronize()
    }

    /// Number of NaN/Inf among the first `len` elements (synchronises).
    pub fn count_nonfinite(&self, x: &GpuBuf<R::Mem>, len: usize) -> u64 {
        f32_only("count_nonfinite", &[x]);
        let c = self.ptr(&self.counter, 0);
        self.rt.memset_zero(c, 4);
        let args = [Arg::I64(len as i64), Arg::Ptr(self.ptr(x, 0)), Arg::Ptr(c)];
        self.rt
            .launch("count_nonfinite_f32", self.ew_cfg(len), &args);
        let mut out = [0u8; 4];
        self.rt.download(&self.counter.mem, 0, &mut out);
        u32::from_ne_bytes(out) as u64
    }

    /// A bf16 view of `len` elements at `off` of `buf` for a GEMM operand:
    /// the buffer itself when it is bf16, else a bf16 copy in `slot`.
    fn bf16_operand(&self, slot: usize, buf: &GpuBuf<R::Mem>, off: usize, len: usize) -> u64 {
        if buf.dtype == Dtype::Bf16 {
            return self.ptr(buf, off);
        }
        let src = self.rt.addr(&buf.mem);
        if let Some(p) = self.params_bf16.borrow_mut().as_mut() {
            if p.src == src && p.len == buf.len {
                if !p.fresh {
                    let args = [
                        Arg::I64(p.len as i64),
                        Arg::Ptr(src),
                        Arg::Ptr(self.rt.addr(&p.copy)),
                    ];
                    self.rt.launch("f32_to_bf16", self.ew_cfg(p.len), &args);
                    p.fresh = true;
                }
                assert!(off + len <= p.len, "operand beyond the parameters");
                return self.rt.addr(&p.copy) + 2 * off as u64;
            }
        }
        self.to_bf16(slot, self.ptr(buf, off), len)
    }

    /// Address of element `off` of `buf`, which the op about to be queued
    /// writes (so a bf16 copy of it is stale from then on).
    fn out_ptr(&self, buf: &GpuBuf<R::Mem>, off: usize) -> u64 {
        if let Some(p) = self.params_bf16.borrow_mut().as_mut() {
            if p.src == self.rt.addr(&buf.mem) {
                p.fresh = false;
            }
        }
        self.ptr(buf, off)
    }

    /// Under `--precision bf16`, `params` (the buffer the optimizer
    /// updates) gets a bf16 copy for the GEMMs.
    fn track_params(&self, params: &GpuBuf<R::Mem>) {
        if !self.opts.bf16 {
            return;
        }
        let src = self.rt.addr(&params.mem);
        let mut p = self.params_bf16.borrow_mut();
        if p.as_ref()
            .is_none_or(|p| p.src != src || p.len != params.len)
        {
            *p = Some(ParamsBf16 {
                src,
                len: params.len,
                copy: self.rt.alloc(params.len.div_ceil(2)),
                fresh: false,
            });
        }
    }

    /// Casts `len` floats at device address `src` to bf16 in scratch `slot`
    /// (grown if needed); returns the bf16 copy's address.
    fn to_bf16(&self, slot: usize, src: u64, len: usize) -> u64 {
        let mut scratch = self.bf16_scratch.borrow_mut();
        if self.rt.len(&scratch[slot]) * 2 < len {
            scratch[slot] = self.rt.alloc(len.div_ceil(2));
        }
        let dst = self.rt.addr(&scratch[slot]);
        let args = [Arg::I64(len as i64), Arg::Ptr(src), Arg::Ptr(dst)];
        self.rt.launch("f32_to_bf16", self.ew_cfg(len), &args);
        dst
    }

    /// Address of element `off` of `buf`.
    pub fn ptr(&self, buf: &GpuBuf<R::Mem>, off: usize) -> u64 {
        assert!(
            off <= buf.len,
            "offset {off} beyond a buffer of {}",
            buf.len
        );
        self.rt.addr(&buf.mem) + (buf.dtype.bytes() * off) as u64
    }

    fn ew_cfg(&self, n: usize) -> Launch {
        let blocks = n
            .div_ceil(EW_THREADS as usize)
            .clamp(1, self.max_blocks as usize) as u32;
        Launch::linear(blocks, EW_THREADS)
    }

    fn reduce_cfg(n: usize, per_thread: usize) -> Launch {
        let blocks = n
            .div_ceil(REDUCE_THREADS as usize * per_thread)
            .clamp(1, REDUCE_BLOCKS as usize) as u32;
        Launch::linear(blocks, REDUCE_THREADS)
    }

    /// stats[stat] = Σ partial[..blocks] (+ stats[stat] if accumulate).
    fn finish_sum(&self, blocks: u32, stats: &GpuBuf<R::Mem>, stat: usize, accumulate: bool) {
        let args = [
            Arg::I32(blocks as i32),
            Arg::Ptr(self.ptr(&self.partial, 0)),
            Arg::Ptr(self.out_ptr(stats, 0)),
            Arg::I32(stat as i32),
            Arg::I32(accumulate as i32),
        ];
        self.rt
            .launch("finish_sum_f32", Launch::linear(1, REDUCE_THREADS), &args);
    }
}

/// How `col_sum` cuts `rows` into slices: (slices, rows per slice). A
/// block sums 32 columns over at least 128 rows (16 per row lane), and
/// there are about 1024 blocks in all when the rows allow, so that a few
/// columns still fill the GPU. Sizes alone decide it, so a sum is the
/// same bits on any GPU and run.
pub fn col_sum_slices(rows: usize, cols: usize) -> (usize, usize) {
    let by_rows = rows / 128;
    let by_grid = 1024usize.div_ceil(cols.div_ceil(32));
    let slices = by_rows.min(by_grid).clamp(1, 1024);
    let per_slice = rows.div_ceil(slices).max(1);
    // No empty slice at the end.
    (rows.div_ceil(per_slice).max(1), per_slice)
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

fn aligned8(p: u64) -> bool {
    p % 8 == 0
}

/// Panics unless every buffer is f32 (ops whose kernels exist only for f32).
fn f32_only<M>(op: &str, bufs: &[&GpuBuf<M>]) {
    for b in bufs {
        assert!(
            b.dtype == Dtype::F32,
            "{op}: a {:?} buffer where f32 is needed",
            b.dtype
        );
    }
}

/// The one element type of `bufs` (activations of one op share theirs).
fn same_dtype<M>(op: &str, bufs: &[&GpuBuf<M>]) -> Dtype {
    let d = bufs[0].dtype;
    assert!(
        bufs.iter().all(|b| b.dtype == d),
        "{op}: mixed f32 and bf16 buffers"
    );
    d
}

fn as_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: any f32 is 4 initialised bytes; u8 has alignment 1.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), 4 * v.len()) }
}

fn as_bytes_mut(v: &mut [f32]) -> &mut [u8] {
    // SAFETY: as above, and any 4 bytes are a valid f32.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), 4 * v.len()) }
}

impl<R: GpuRuntime> Backend for GpuBackend<R> {
    type Buf = GpuBuf<R::Mem>;

    fn name(&self) -> String {
        format!(
            "cuda {} ({}{})",
            if self.opts.bf16 {
                "bf16 (activations and GEMM operands; weights, optimizer and losses f32)"
            } else {
                "f32"
            },
            self.rt.describe(),
            if self.rt.tf32() && !self.opts.bf16 {
                ", tf32"
            } else {
                ""
            }
        )
    }

    fn alloc(&self, len: usize) -> GpuBuf<R::Mem> {
        GpuBuf {
            mem: self.rt.alloc(len),
            len,
            dtype: Dtype::F32,
        }
    }

    fn alloc_act(&self, len: usize) -> GpuBuf<R::Mem> {
        if !self.opts.bf16 {
            return self.alloc(len);
        }
        GpuBuf {
            mem: self.rt.alloc(len.div_ceil(2)),
            len,
            dtype: Dtype::Bf16,
        }
    }

    fn act_elem_bytes(&self) -> usize {
        if self.opts.bf16 { 2 } else { 4 }
    }

    fn memory(&self, buf: &mut GpuBuf<R::Mem>) -> Memory {
        match self.rt.cuda_stream() {
            Some(stream) if buf.dtype == Dtype::F32 => Memory::Cuda {
                ptr: self.rt.addr(&buf.mem),
                len: buf.len,
                stream: stream.clone(),
            },
            _ => Memory::Opaque,
        }
    }
    fn upload(&self, src: &[f32], dst: &mut GpuBuf<R::Mem>, off: usize) {
        if src.is_empty() {
            return;
        }
        assert!(off + src.len() <= dst.len, "upload beyond the buffer");
        self.out_ptr(dst, off);
        let at = dst.dtype.bytes() * off;
        match dst.dtype {
            Dtype::F32 => self.rt.upload(as_bytes(src), &mut dst.mem, at),
            Dtype::Bf16 => {
                let bits: Vec<u8> = src
                    .iter()
                    .flat_map(|&v| half::bf16::from_f32(v).to_bits().to_ne_bytes())
                    .collect();
                self.rt.upload(&bits, &mut dst.mem, at)
            }
        }
    }

    fn download(&self, src: &GpuBuf<R::Mem>, off: usize, dst: &mut [f32]) {
        if dst.is_empty() {
            return;
        }
        assert!(off + dst.len() <= src.len, "download beyond the buffer");
        let at = src.dtype.bytes() * off;
        match src.dtype {
            Dtype::F32 => self.rt.download(&src.mem, at, as_bytes_mut(dst)),
            Dtype::Bf16 => {
                let mut bits = vec![0u8; 2 * dst.len()];
                self.rt.download(&src.mem, at, &mut bits);
                for (d, b) in dst.iter_mut().zip(bits.chunks_exact(2)) {
                    *d = half::bf16::from_bits(u16::from_ne_bytes([b[0], b[1]])).to_f32();
                }
            }
        }
    }

    fn zero(&self, buf: &mut GpuBuf<R::Mem>, off: usize, len: usize) {
        if len == 0 {
            return;
        }
        assert!(off + len <= buf.len, "zero beyond the buffer");
        self.rt
            .memset_zero(self.out_ptr(buf, off), buf.dtype.bytes() * len);
    }

    fn gemm(&self, g: Gemm, a: &GpuBuf<R::Mem>, b: &GpuBuf<R::Mem>, c: &mut GpuBuf<R::Mem>) {
        if g.m == 0 || g.n == 0 {
            return;
        }
        assert!(g.a_off + g.m * g.k <= a.len, "gemm: A beyond its buffer");
        assert!(g.b_off + g.k * g.n <= b.len, "gemm: B beyond its buffer");
        assert!(g.c_off + g.m * g.n <= c.len, "gemm: C beyond its buffer");
        let cm = ColMajor::of(&g);
        let pc = self.out_ptr(c, g.c_off);
        // Column-major: B's buffer first, A's second. Both operands bf16
        // when either is (an f32 one is cast), or under --precision bf16.
        let bf16 = self.opts.bf16 || a.dtype == Dtype::Bf16 || b.dtype == Dtype::Bf16;
        if bf16 {
            let first = self.bf16_operand(0, b, g.b_off, g.k * g.n);
            let second = self.bf16_operand(1, a, g.a_off, g.m * g.k);
            self.rt.gemm(
                &cm,
                Dtype::Bf16,
                first,
                second,
                c.dtype,
                pc,
                g.alpha,
                g.beta,
            );
        } else {
            let (pa, pb) = (self.ptr(a, g.a_off), self.ptr(b, g.b_off));
            self.rt
                .gemm(&cm, Dtype::F32, pb, pa, c.dtype, pc, g.alpha, g.beta);
        }
    }

    fn bias_act(
        &self,
        act: Option<Activation>,
        rows: usize,
        cols: usize,
        bias: &GpuBuf<R::Mem>,
        bias_off: usize,
        z: &mut GpuBuf<R::Mem>,
        h: Option<&mut GpuBuf<R::Mem>>,
    ) {
        let n = rows * cols;
        if n == 0 {
            return;
        }
        f32_only("bias_act bias", &[bias]);
        assert!(n <= z.len, "bias_act: z beyond its buffer");
        let h = h.filter(|_| act.is_some());
        let dtype = match &h {
            Some(h) => same_dtype("bias_act", &[z, h]),
            None => z.dtype,
        };
        let pb = self.ptr(bias, bias_off);
        let pz = self.out_ptr(z, 0);
        let ph = h.map_or(0, |h| self.out_ptr(h, 0));
        // Four elements a thread: 16 bytes of f32 (8 of bf16) per access.
        let v4 = cols % 4 == 0 && aligned16(pb) && aligned16(pz) && aligned16(ph);
        let v4_bf16 = cols % 4 == 0 && aligned16(pb) && aligned8(pz) && aligned8(ph);
        let (name, cfg) = match dtype {
            Dtype::Bf16 if v4_bf16 => ("bias_act_bf16_v4", self.ew_cfg(n / 4)),
            Dtype::Bf16 => ("bias_act_bf16", self.ew_cfg(n)),
            Dtype::F32 if v4 => ("bias_act_f32_v4", self.ew_cfg(n / 4)),
            Dtype::F32 => ("bias_act_f32", self.ew_cfg(n)),
        };
        let args = [
            Arg::I32(act_code(act)),
            Arg::I64(rows as i64),
            Arg::I64(cols as i64),
            Arg::Ptr(pb),
            Arg::Ptr(pz),
            Arg::Ptr(ph),
        ];
        self.rt.launch(name, cfg, &args);
    }

    fn act_backward(
        &self,
        act: Activation,
        len: usize,
        z: &GpuBuf<R::Mem>,
        h: &GpuBuf<R::Mem>,
        dh: &mut GpuBuf<R::Mem>,
    ) {
        if len == 0 {
            return;
        }
        let dtype = same_dtype("act_backward", &[z, h, dh]);
        assert!(
            len <= z.len.min(h.len).min(dh.len),
            "act_backward beyond a buffer"
        );
        let (pz, ph, pd) = (self.ptr(z, 0), self.ptr(h, 0), self.out_ptr(dh, 0));
        let v4 = len % 4 == 0 && aligned16(pz) && aligned16(ph) && aligned16(pd);
        let v4_bf16 = len % 4 == 0 && aligned8(pz) && aligned8(ph) && aligned8(pd);
        let (name, cfg) = match dtype {
            Dtype::Bf16 if v4_bf16 => ("act_backward_bf16_v4", self.ew_cfg(len / 4)),
            Dtype::Bf16 => ("act_backward_bf16", self.ew_cfg(len)),
            Dtype::F32 if v4 => ("act_backward_f32_v4", self.ew_cfg(len / 4)),
            Dtype::F32 => ("act_backward_f32", self.ew_cfg(len)),
        };
        let args = [
            Arg::I32(act_code(Some(act))),
            Arg::I64(len as i64),
            Arg::Ptr(pz),
            Arg::Ptr(ph),
            Arg::Ptr(pd),
        ];
        self.rt.launch(name, cfg, &args);
    }

    fn col_sum(
        &self,
        rows: usize,
        cols: usize,
        x: &GpuBuf<R::Mem>,
        out: &mut GpuBuf<R::Mem>,
        off: usize,
        beta: f32,
    ) {
        if cols == 0 {
            return;
        }
        f32_only("col_sum output", &[out]);
        assert!(
            rows * cols <= x.len && off + cols <= out.len,
            "col_sum beyond a buffer"
        );
        // Block (32, 8), a slice of rows per grid row: see col_sum_f32 in
        // reduce.cu.
        let (slices, per_slice) = col_sum_slices(rows, cols);
        let mut partial = self.col_partial.borrow_mut();
        if slices > 1 && self.rt.len(&partial) < slices * cols {
            *partial = self.rt.alloc(slices * cols);
        }
        let partial = self.rt.addr(&partial);
        let cfg = Launch {
            grid: (cols.div_ceil(32) as u32, slices as u32, 1),
            block: (32, 8, 1),
        };
        let name = match x.dtype {
            Dtype::F32 => "col_sum_f32",
            Dtype::Bf16 => "col_sum_bf16",
        };
        let out = self.out_ptr(out, off);
        let args = [
            Arg::I64(rows as i64),
            Arg::I64(cols as i64),
            Arg::I64(per_slice as i64),
            Arg::Ptr(self.ptr(x, 0)),
            Arg::Ptr(partial),
            Arg::Ptr(out),
            Arg::F32(beta),
        ];
        self.rt.launch(name, cfg, &args);
        if slices > 1 {
            let args = [
                Arg::I64(cols as i64),
                Arg::I32(slices as i32),
                Arg::Ptr(partial),
                Arg::Ptr(out),
                Arg::F32(beta),
            ];
            self.rt
                .launch("col_sum_finish_f32", self.ew_cfg(cols), &args);
        }
    }

    fn task_loss(
        &self,
        a: LossArgs,
        out: &GpuBuf<R::Mem>,
        labels: &GpuBuf<R::Mem>,
        dout: &mut GpuBuf<R::Mem>,
        stats: &mut GpuBuf<R::Mem>,
    ) {
        f32_only("task_loss", &[out, labels, dout, stats]);
        let cfg = Self::reduce_cfg(a.rows, 1);
        let (name, width) = match a.kind {
            TaskKind::Classify { classes } => ("softmax_ce_f32", Some(classes)),
            TaskKind::Binary => ("bce_logits_f32", None),
            TaskKind::Regress { dim } => ("mse_f32", Some(dim)),
        };
        let mut args = vec![Arg::I64(a.rows as i64)];
        // Classes (softmax) or label width (MSE); BCE has one column.
        args.extend(width.map(|w| Arg::I32(w as i32)));
        args.extend([
            Arg::Ptr(self.ptr(out, 0)),
            Arg::I64(a.out_cols as i64),
            Arg::I64(a.out_off as i64),
            Arg::Ptr(self.ptr(labels, 0)),
            Arg::I64(a.label_cols as i64),
            Arg::I64(a.label_off as i64),
            Arg::F32(a.grad_scale),
            Arg::Ptr(self.out_ptr(dout, 0)),
            Arg::Ptr(self.ptr(&self.partial, 0)),
        ]);
        self.rt.launch(name, cfg, &args);
        self.finish_sum(cfg.grid.0, stats, a.stat, a.accumulate);
    }

    fn sum_squares(&self, x: &GpuBuf<R::Mem>, len: usize, stats: &mut GpuBuf<R::Mem>, stat: usize) {
        f32_only("sum_squares", &[x, stats]);
        assert!(len <= x.len, "sum_squares beyond the buffer");
        let cfg = Self::reduce_cfg(len, 4);
        let args = [
            Arg::I64(len as i64),
            Arg::Ptr(self.ptr(x, 0)),
            Arg::Ptr(self.ptr(&self.partial, 0)),
        ];
        self.rt.launch("sum_squares_partial_f32", cfg, &args);
        self.finish_sum(cfg.grid.0, stats, stat, false);
    }

    fn scale(&self, x: &mut GpuBuf<R::Mem>, len: usize, s: f32) {
        if len == 0 {
            return;
        }
        f32_only("scale", &[x]);
        assert!(len <= x.len, "scale beyond the buffer");
        let args = [
            Arg::I64(len as i64),
            Arg::Ptr(self.out_ptr(x, 0)),
            Arg::F32(s),
        ];
        self.rt.launch("scale_f32", self.ew_cfg(len), &args);
    }

    fn update(
        &self,
        a: UpdateArgs,
        len: usize,
        params: &mut GpuBuf<R::Mem>,
        grads: &GpuBuf<R::Mem>,
        state: &mut GpuBuf<R::Mem>,
        stats: &GpuBuf<R::Mem>,
    ) {
        if len == 0 {
            return;
        }
        f32_only("update", &[params, grads, state, stats]);
        self.track_params(params);
        assert!(
            len <= params.len && len <= grads.len,
            "update beyond a buffer"
        );
        // clip <= 0 means none (a clip norm of 0 is rejected by the config).
        let clip = a.clip.unwrap_or(0.0);
        let head = [
            Arg::I64(len as i64),
            Arg::Ptr(self.out_ptr(params, 0)),
            Arg::Ptr(self.ptr(grads, 0)),
        ];
        let norm = [
            Arg::Ptr(self.ptr(stats, 0)),
            Arg::I32(a.norm_sq_stat as i32),
            Arg::F32(clip),
            Arg::F32(a.lr),
            Arg::F32(a.weight_decay),
        ];
        let cfg = self.ew_cfg(len);
        match a.rule {
            UpdateRule::Sgd {
                momentum,
                first_step,
            } => {
                assert!(state.len >= len, "SGD state holds the momentum");
                let mut args = head.to_vec();
                args.push(Arg::Ptr(self.out_ptr(state, 0)));
                args.extend(norm);
                args.extend([Arg::F32(momentum), Arg::I32(first_step as i32)]);
                self.rt.launch("sgd_update_f32", cfg, &args);
            }
            UpdateRule::AdamW {
                beta1,
                beta2,
                eps,
                step,
            } => {
                assert!(state.len >= 2 * len, "AdamW state holds m and v");
                // As the CPU backend: 1 - β^t in f32.
                let bc1 = 1.0 - beta1.powi(step as i32);
                let bc2 = 1.0 - beta2.powi(step as i32);
                let mut args = head.to_vec();
                args.extend([
                    Arg::Ptr(self.out_ptr(state, 0)),
                    Arg::Ptr(self.ptr(state, len)),
                ]);
                args.extend(norm);
                args.extend([
                    Arg::F32(beta1),
                    Arg::F32(beta2),
                    Arg::F32(eps),
                    Arg::F32(bc1),
                    Arg::F32(bc2),
                ]);
                self.rt.launch("adamw_update_f32", cfg, &args);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The row-major → column-major GEMM mapping, checked on the host with
    //! a plain column-major BLAS-semantics GEMM against the CPU backend.
    use super::*;
    use crate::backend::cpu::Cpu;

    #[test]
    fn col_sum_slices_cover_the_rows_and_fill_the_gpu() {
        assert_eq!(col_sum_slices(0, 5), (1, 1));
        assert_eq!(col_sum_slices(37, 13), (1, 37));
        assert_eq!(col_sum_slices(1000, 70), (7, 143));
        assert_eq!(col_sum_slices(4096, 256), (32, 128));
        assert_eq!(col_sum_slices(65536, 1024), (32, 2048));
        assert_eq!(col_sum_slices(1 << 20, 1), (1024, 1024));
        for rows in [1, 7, 127, 128, 129, 1000, 4095, 65537] {
            for cols in [1, 31, 33, 256, 2048, 100_000] {
                let (s, per) = col_sum_slices(rows, cols);
                assert!((1..=1024).contains(&s), "{rows}x{cols}");
                assert!(
                    s * per >= rows && (s - 1) * per < rows,
                    "{rows}x{cols}: {s} x {per}"
                );
                assert!(s == 1 || per >= 128, "{rows}x{cols}: slices under 128 rows");
            }
        }
    }

    /// C = alpha op(A) op(B) + beta C, column-major, as BLAS defines it.
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
