//! What the GPU backend needs from a device runtime: memory, kernel
//! launches by name with typed arguments, and a column-major GEMM.
//!
//! [`crate::backend::cuda::CudaRuntime`] implements it with cudarc (the
//! CUDA driver, NVRTC-compiled `kernels/*.cu`, cuBLAS). The tests also run
//! the same [`super::GpuBackend`] on a CPU emulator of the kernels, so the
//! launch logic (grids, argument lists, which variant of a kernel) is
//! checked against the CPU backend on machines without a GPU.

use super::ColMajor;

/// One kernel argument. Pointers are device addresses (`Ptr(0)` is null);
/// the integer width must match the kernel's parameter (`int` is I32,
/// `long long` I64): the driver copies raw bytes and cannot check.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    I32(i32),
    I64(i64),
    F32(f32),
    Ptr(u64),
}

/// Grid and block of a launch (x, y, z).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
}

impl Launch {
    /// A one-dimensional launch of `blocks` blocks of `threads` threads.
    pub fn linear(blocks: u32, threads: u32) -> Self {
        Launch {
            grid: (blocks, 1, 1),
            block: (threads, 1, 1),
        }
    }
}

/// An element type of device buffers, GEMM operands and GEMM outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    /// bf16 values as 16 raw bits each.
    Bf16,
}

impl Dtype {
    pub fn bytes(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::Bf16 => 2,
        }
    }
}

/// A device runtime. Every operation is queued on one stream, in order;
/// only `download` waits for it. Errors inside an operation are bugs or a
/// broken device, not user input: implementations panic with the error.
pub trait GpuRuntime {
    /// A device allocation of f32 elements; freed on drop.
    type Mem;

    /// A zero-filled allocation of `len` elements (at least one: a
    /// zero-length allocation is not allowed by CUDA).
    fn alloc(&self, len: usize) -> Self::Mem;
    fn len(&self, m: &Self::Mem) -> usize;
    /// The device address of element 0; element i is at `addr + 4 i`.
    fn addr(&self, m: &Self::Mem) -> u64;
    /// Host bytes → the allocation's bytes from `byte_off` on.
    fn upload(&self, src: &[u8], dst: &mut Self::Mem, byte_off: usize);
    /// The allocation's bytes from `byte_off` on → host, after all queued work.
    fn download(&self, src: &Self::Mem, byte_off: usize, dst: &mut [u8]);
    /// Zeroes `bytes` bytes at device address `dst`.
    fn memset_zero(&self, dst: u64, bytes: usize);
    /// Device-to-device copy of `bytes` bytes.
    fn copy(&self, src: u64, dst: u64, bytes: usize);
    /// Launches kernel `name` (an `extern "C" __global__` of kernels/*.cu).
    fn launch(&self, name: &'static str, cfg: Launch, args: &[Arg]);
    /// C = alpha op(first) op(second) + beta C, column-major as BLAS
    /// defines it (see [`ColMajor`]), accumulated in f32; both operands are
    /// of type `operands`, C of type `out`; beta 0 overwrites C.
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
    );
    /// Streaming multiprocessors (sizes the element-wise grids).
    fn sm_count(&self) -> u32;
    /// Waits for all queued work.
    fn synchronize(&self);
    /// The device and architecture, for the run header ("NVIDIA H100, sm_90").
    fn describe(&self) -> String;
    /// Whether f32 GEMMs may use TF32 tensor cores.
    fn tf32(&self) -> bool;
    /// The CUDA stream every op is queued on, when this runtime is CUDA
    /// (other code can then order its own work after the ops).
    fn cuda_stream(&self) -> Option<&std::sync::Arc<cudarc::driver::CudaStream>> {
        None
    }
}
