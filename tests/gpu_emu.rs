//! The GPU backend's checks (tests/gpu_checks) on a CPU emulator of the
//! CUDA kernels: `kernels/*.cu` compiled by the host C++ compiler
//! (crates/kernel-emu), each launch run block by block with one fiber per
//! GPU thread. So on a machine without a GPU, every kernel, its launch
//! shape, its argument list (kinds and integer widths, checked against
//! the kernel's C signature) and the choice between its variants are
//! checked against the CPU backend, and 20 training steps end to end.
//!
//! What it cannot check: cuBLAS (the GEMM here is a plain column-major
//! loop with BLAS semantics, given the same arguments), the driver, NCCL,
//! timing and races between streams. tests/gpu.rs runs the same checks on
//! a real GPU when there is one.
//!
//! Every allocation carries guard zones checked after each launch, and
//! every pointer argument must point into a live allocation, so a kernel
//! writing out of bounds or a wrong offset fails here.

mod gpu_checks;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use gpu_checks as checks;
use kernel_emu as emu;
use ringtrain::backend::gpu::{Arg, ColMajor, Dtype, GpuBackend, GpuOptions, GpuRuntime, Launch};

/// Floats of guard zone before and after every allocation.
const GUARD: usize = 64;
/// The guard zones' bit pattern: a NaN no kernel produces.
const CANARY: u32 = 0x7fa5_a5a5;

/// Live allocations: base address of the data → (length in floats).
type Registry = Rc<RefCell<BTreeMap<u64, usize>>>;

/// An emulated device allocation: GUARD + len + GUARD floats on the heap.
pub struct EmuMem {
    raw: *mut f32,
    len: usize,
    registry: Registry,
}

impl EmuMem {
    fn data(&self) -> *mut f32 {
        // SAFETY: inside the allocation of GUARD + len + GUARD floats.
        unsafe { self.raw.add(GUARD) }
    }
}

impl Drop for EmuMem {
    fn drop(&mut self) {
        self.registry.borrow_mut().remove(&(self.data() as u64));
        let total = self.len + 2 * GUARD;
        // SAFETY: `raw` came from Box::into_raw of a boxed slice of `total`.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.raw, total)) });
    }
}

/// The emulated device: memory on the heap, kernels run by kernel-emu.
pub struct EmuRuntime {
    registry: Registry,
    sms: u32,
}

impl EmuRuntime {
    /// `sms` sizes the element-wise grids (32 blocks per SM): few SMs
    /// make the kernels' grid-stride loops go round more than once.
    pub fn new(sms: u32) -> Self {
        EmuRuntime {
            registry: Rc::default(),
            sms,
        }
    }

    /// Panics unless [addr, addr + bytes) lies inside one live allocation.
    fn check_extent(&self, what: &str, addr: u64, bytes: usize) {
        let reg = self.registry.borrow();
        let inside = reg
            .range(..=addr)
            .next_back()
            .is_some_and(|(&base, &len)| addr + bytes as u64 <= base + 4 * len as u64);
        assert!(
            inside,
            "{what}: [{addr:#x}, +{bytes}) is not inside a live allocation"
        );
    }

    /// Panics if any allocation's guard zones were written.
    fn check_guards(&self, after: &str) {
        for (&base, &len) in self.registry.borrow().iter() {
            let p = base as *const u32;
            for i in 0..GUARD {
                // SAFETY: the guard zones of a live allocation.
                let (before, behind) = unsafe { (*p.sub(GUARD).add(i), *p.add(len).add(i)) };
                assert!(
                    before == CANARY && behind == CANARY,
                    "{after} wrote outside an allocation of {len} floats (guard {} element {i})",
                    if before != CANARY { "before" } else { "after" }
                );
            }
        }
    }
}

/// An element of a GEMM operand at device address `base`.
fn load(operands: Dtype, base: u64, i: usize) -> f64 {
    // SAFETY: the caller checked the operand's extent.
    unsafe {
        match operands {
            Dtype::F32 => *(base as *const f32).add(i) as f64,
            Dtype::Bf16 => f32::from_bits((*(base as *const u16).add(i) as u32) << 16) as f64,
        }
    }
}

/// Stores `v` as element `i` of a `dtype` array at device address `base`
/// (bf16: rounded to nearest even, as cuBLAS writes it).
///
/// # Safety
/// The element must lie in a live allocation.
unsafe fn store(dtype: Dtype, base: u64, i: usize, v: f32) {
    // SAFETY: the caller's.
    unsafe {
        match dtype {
            Dtype::F32 => *(base as *mut f32).add(i) = v,
            Dtype::Bf16 => *(base as *mut u16).add(i) = half::bf16::from_f32(v).to_bits(),
        }
    }
}

impl GpuRuntime for EmuRuntime {
    type Mem = EmuMem;

    fn alloc(&self, len: usize) -> EmuMem {
        let len = len.max(1);
        let mut v = vec![0f32; len + 2 * GUARD];
        v[..GUARD].fill(f32::from_bits(CANARY));
        v[GUARD + len..].fill(f32::from_bits(CANARY));
        let raw = Box::into_raw(v.into_boxed_slice()) as *mut f32;
        let m = EmuMem {
            raw,
            len,
            registry: self.registry.clone(),
        };
        self.registry.borrow_mut().insert(m.data() as u64, len);
        m
    }

    fn len(&self, m: &EmuMem) -> usize {
        m.len
    }

    fn addr(&self, m: &EmuMem) -> u64 {
        m.data() as u64
    }

    fn upload(&self, src: &[u8], dst: &mut EmuMem, byte_off: usize) {
        assert!(
            byte_off + src.len() <= 4 * dst.len,
            "upload beyond the buffer"
        );
        let at = (dst.data() as *mut u8).wrapping_add(byte_off);
        // SAFETY: checked extent; distinct allocations.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), at, src.len()) }
    }

    fn download(&self, src: &EmuMem, byte_off: usize, dst: &mut [u8]) {
        assert!(
            byte_off + dst.len() <= 4 * src.len,
            "download beyond the buffer"
        );
        let at = (src.data() as *const u8).wrapping_add(byte_off);
        // SAFETY: checked extent; distinct allocations.
        unsafe { std::ptr::copy_nonoverlapping(at, dst.as_mut_ptr(), dst.len()) }
    }

    fn memset_zero(&self, dst: u64, bytes: usize) {
        self.check_extent("memset", dst, bytes);
        // SAFETY: inside a live allocation (checked).
        unsafe { std::ptr::write_bytes(dst as *mut u8, 0, bytes) }
    }

    fn copy(&self, src: u64, dst: u64, bytes: usize) {
        self.check_extent("copy source", src, bytes);
        self.check_extent("copy destination", dst, bytes);
        // SAFETY: inside live allocations (checked); memmove semantics.
        unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, bytes) }
    }

    fn launch(&self, name: &'static str, cfg: Launch, args: &[Arg]) {
        let args: Vec<emu::Arg> = args
            .iter()
            .map(|a| match *a {
                Arg::I32(v) => emu::Arg::I32(v),
                Arg::I64(v) => emu::Arg::I64(v),
                Arg::F32(v) => emu::Arg::F32(v),
                Arg::Ptr(p) => {
                    if p != 0 {
                        self.check_extent(&format!("{name}: a pointer argument"), p, 0);
                    }
                    emu::Arg::Ptr(p)
                }
            })
            .collect();
        // SAFETY: every pointer argument lies in a live allocation
        // (checked above); the extents the kernel touches are what the
        // checks test, and the guard zones catch writes past them.
        if let Err(e) = unsafe { emu::launch(name, cfg.grid, cfg.block, &args) } {
            panic!("{name}: {e}");
        }
        self.check_guards(name);
    }

    fn gemm(
        &self,
        cm: &ColMajor,
        operands: Dtype,
        first: u64,
        second: u64,
        out: Dtype,
        c: u64,
        alpha: f32,
        beta: f32,
    ) {
        let el = operands.bytes();
        let extent = |ld: usize, trans: bool, rows: usize, cols: usize| {
            // Column-major rows × cols (before op), leading dimension ld.
            let (r, c) = if trans { (cols, rows) } else { (rows, cols) };
            if c == 0 { 0 } else { ld * (c - 1) + r }
        };
        let fa = extent(cm.ld_first, cm.trans_first, cm.m, cm.k);
        let fb = extent(cm.ld_second, cm.trans_second, cm.k, cm.n);
        self.check_extent("gemm first operand", first, el * fa);
        self.check_extent("gemm second operand", second, el * fb);
        self.check_extent("gemm C", c, out.bytes() * (cm.ldc * (cm.n - 1) + cm.m));
        let a = |i: usize, l: usize| {
            let at = if cm.trans_first {
                l + i * cm.ld_first
            } else {
                i + l * cm.ld_first
            };
            load(operands, first, at)
        };
        let b = |l: usize, j: usize| {
            let at = if cm.trans_second {
                j + l * cm.ld_second
            } else {
                l + j * cm.ld_second
            };
            load(operands, second, at)
        };
        for j in 0..cm.n {
            for i in 0..cm.m {
                let s: f64 = (0..cm.k).map(|l| a(i, l) * b(l, j)).sum();
                let at = i + j * cm.ldc;
                // beta 0 overwrites C without reading it, as in BLAS.
                let old = if beta == 0.0 {
                    0.0
                } else {
                    beta as f64 * load(out, c, at)
                };
                // SAFETY: inside C (checked).
                unsafe { store(out, c, at, (alpha as f64 * s + old) as f32) };
            }
        }
        self.check_guards("gemm");
    }

    fn sm_count(&self) -> u32 {
        self.sms
    }

    fn synchronize(&self) {}

    fn describe(&self) -> String {
        format!("CPU emulator, {} SMs", self.sms)
    }

    fn tf32(&self) -> bool {
        false
    }
}

/// One SM: element-wise grids of at most 32 blocks × 256 threads, so
/// the checks' larger sizes go round the kernels' grid-stride loops.
fn emu() -> GpuBackend<EmuRuntime> {
    GpuBackend::with_runtime(EmuRuntime::new(1), GpuOptions::default())
}

fn bf16() -> GpuBackend<EmuRuntime> {
    let opts = GpuOptions {
        bf16: true,
        ..GpuOptions::default()
    };
    GpuBackend::with_runtime(EmuRuntime::new(1), opts)
}

/// One test per check, on a fresh emulated backend.
macro_rules! on_emu {
    ($($name:ident($make:ident, $arg:tt)),* $(,)?) => {$(
        #[test]
        fn $name() {
            on_emu!(@call $name, $make, $arg);
        }
    )*};
    (@call $name:ident, $make:ident, ref) => { checks::$name(&$make()) };
    (@call $name:ident, $make:ident, own) => { checks::$name($make()) };
}

on_emu!(
    upload_download_zero_round_trip(emu, ref),
    gemm_matches_cpu_in_every_transpose_with_offsets(emu, ref),
    bias_act_and_act_backward_match_cpu(emu, ref),
    col_sum_sum_squares_and_scale_match_cpu(emu, ref),
    task_losses_match_cpu_with_missing_labels_and_accumulate(emu, ref),
    sgd_and_adamw_updates_match_cpu_with_and_without_clipping(emu, ref),
    bf16_gemm_matches_cpu_within_1e2(bf16, ref),
    bf16_activation_storage_matches_cpu(bf16, ref),
    twenty_training_steps_match_cpu_sgd(emu, own),
    twenty_training_steps_match_cpu_adamw(emu, own),
    twenty_local_steps_match_cpu_sgd(emu, own),
    twenty_steps_with_gradnorm_and_task_stats_match_cpu(emu, own),
    twenty_steps_with_uncertainty_weighting_match_cpu(emu, own),
    twenty_training_steps_bf16_stay_close_to_cpu(bf16, own),
);

/// The emulator itself catches a wrong argument width: the kind of bug a
/// real GPU would not report (the driver copies raw bytes).
#[test]
fn a_wrong_argument_width_is_caught() {
    let be = emu();
    let rt = be.runtime();
    let x = rt.alloc(8);
    let args = [Arg::I32(8), Arg::Ptr(rt.addr(&x)), Arg::F32(2.0)];
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.launch("scale_f32", Launch::linear(1, 32), &args)
    }));
    assert!(r.is_err(), "an int where the kernel takes long long passed");
}

/// ... and a kernel writing past the end of its buffer.
#[test]
fn a_write_past_the_end_is_caught() {
    let be = emu();
    let rt = be.runtime();
    let x = rt.alloc(8);
    let args = [Arg::I64(9), Arg::Ptr(rt.addr(&x)), Arg::F32(2.0)];
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.launch("scale_f32", Launch::linear(1, 32), &args)
    }));
    assert!(r.is_err(), "scale of 9 elements in a buffer of 8 passed");
}
