//! The CUDA runtime of the GPU backend: cudarc's driver API, the kernels
//! of `kernels/*.cu` (compiled by NVRTC at start for the device's own
//! architecture, cached on disk) and cuBLAS, all on one stream.
//!
//! [`CudaBackend`] is [`GpuBackend`] on this runtime. Event tracking is
//! switched off for the context: every op runs on [`CudaBackend::stream`],
//! so stream order is the only synchronisation needed, and kernels take
//! raw device pointers. A CUDA error inside an op is a bug or a broken
//! device, not user input: it panics with the CUDA error (the panic hook
//! turns that into MPI_Abort). Set-up errors are returned.
//!
//! For another stream (NCCL): [`CudaBackend::stream`], [`CudaBackend::context`]
//! and [`CudaBackend::device_ptr`] give the compute stream, the context and
//! a buffer's raw `CUdeviceptr`; work on another stream must be ordered
//! against the compute stream with events, since buffers carry none.

pub mod kernels;
pub mod probe;

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::cublas::{CudaBlas, sys as blas_sys};
use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};

use super::gpu::{Arg, ColMajor, Dtype, GpuBackend, GpuBuf, GpuRuntime, Launch};
use crate::error::{Error, Result};

pub use super::gpu::GpuOptions as CudaOptions;

/// The GPU backend on a CUDA device.
pub type CudaBackend = GpuBackend<CudaRuntime>;

/// One device: context, stream, cuBLAS handle and the loaded kernels.
pub struct CudaRuntime {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    kernels: HashMap<&'static str, CudaFunction>,
    sms: u32,
    arch: String,
    device_name: String,
    tf32: bool,
}

fn gpu_err(what: &str) -> impl Fn(String) -> Error + '_ {
    move |e| Error::Gpu(format!("{what}: {e}"))
}

fn launched<T, E: std::fmt::Display>(r: std::result::Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("CUDA error in {what}: {e}"),
    }
}

impl CudaRuntime {
    /// Opens device `ordinal`, compiles (or loads cached) kernels for its
    /// architecture and creates the stream and cuBLAS handle. Call only
    /// after [`probe::probe`] said the GPU is usable.
    pub fn new(ordinal: usize, tf32: bool) -> Result<Self> {
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
        let math = if tf32 {
            blas_sys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
        } else {
            blas_sys::cublasMath_t::CUBLAS_DEFAULT_MATH
        };
        // SAFETY: a valid handle.
        unsafe { blas_sys::cublasSetMathMode(*blas.handle(), math) }
            .result()
            .map_err(|e| gpu_err("cuBLAS math mode")(e.to_string()))?;

        if let (Ok(nvrtc), Some(driver)) = (kernels::nvrtc_version(), probe::driver_cuda_version())
        {
            kernels::ptx_loadable(nvrtc, driver).map_err(gpu_err("NVRTC"))?;
        }
        let include = kernels::include_paths_from_env();
        let mut funcs = HashMap::new();
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
        Ok(CudaRuntime {
            ctx,
            stream,
            blas,
            kernels: funcs,
            sms,
            arch,
            device_name,
            tf32,
        })
    }
}

impl GpuRuntime for CudaRuntime {
    type Mem = CudaSlice<f32>;

    fn alloc(&self, len: usize) -> CudaSlice<f32> {
        launched(
            self.stream.alloc_zeros::<f32>(len.max(1)),
            &format!("alloc of {len} floats"),
        )
    }

    fn len(&self, m: &CudaSlice<f32>) -> usize {
        m.len()
    }

    fn addr(&self, m: &CudaSlice<f32>) -> u64 {
        m.device_ptr(&self.stream).0
    }

    fn upload(&self, src: &[u8], dst: &mut CudaSlice<f32>, byte_off: usize) {
        assert!(
            byte_off + src.len() <= 4 * dst.len(),
            "upload beyond the buffer"
        );
        let at = self.addr(dst) + byte_off as u64;
        // SAFETY: inside the allocation (checked); the host buffer is only
        // read while the call stages it (pageable memory).
        let r =
            unsafe { cudarc::driver::result::memcpy_htod_async(at, src, self.stream.cu_stream()) };
        launched(r, "upload");
    }

    fn download(&self, src: &CudaSlice<f32>, byte_off: usize, dst: &mut [u8]) {
        assert!(
            byte_off + dst.len() <= 4 * src.len(),
            "download beyond the buffer"
        );
        let at = self.addr(src) + byte_off as u64;
        // SAFETY: inside the allocation (checked); synchronised before the
        // host buffer is released to the caller.
        let r =
            unsafe { cudarc::driver::result::memcpy_dtoh_async(dst, at, self.stream.cu_stream()) };
        launched(r, "download");
        launched(self.stream.synchronize(), "download");
    }

    fn memset_zero(&self, dst: u64, bytes: usize) {
        // SAFETY: callers pass an extent inside a live allocation.
        let r = unsafe {
            cudarc::driver::result::memset_d8_async(dst, 0, bytes, self.stream.cu_stream())
        };
        launched(r, "memset");
    }

    fn copy(&self, src: u64, dst: u64, bytes: usize) {
        // SAFETY: callers pass extents inside live allocations.
        let r = unsafe {
            cudarc::driver::result::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream())
        };
        launched(r, "memcpy");
    }

    fn launch(&self, name: &'static str, cfg: Launch, args: &[Arg]) {
        let f = self
            .kernels
            .get(name)
            .unwrap_or_else(|| panic!("kernel {name} not loaded"));
        let mut b = self.stream.launch_builder(f);
        for a in args {
            match a {
                Arg::I32(v) => b.arg(v),
                Arg::I64(v) => b.arg(v),
                Arg::F32(v) => b.arg(v),
                Arg::Ptr(v) => b.arg(v),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: cfg.grid,
            block_dim: cfg.block,
            shared_mem_bytes: 0,
        };
        // SAFETY: argument kinds and widths match the kernels' signatures
        // (checked on the CPU emulator by tests/gpu_emu.rs).
        launched(unsafe { b.launch(cfg) }, name);
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
        use blas_sys::cudaDataType::{CUDA_R_16BF, CUDA_R_32F};
        let op = |t: bool| {
            if t {
                blas_sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                blas_sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let ty = |d: Dtype| match d {
            Dtype::F32 => CUDA_R_32F,
            Dtype::Bf16 => CUDA_R_16BF,
        };
        let dtype = ty(operands);
        // TF32 only when asked for (the handle's math mode) and f32 operands.
        let compute = if self.tf32 && operands == Dtype::F32 {
            blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32
        } else {
            blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F
        };
        // SAFETY: the caller checked the extents against live buffers.
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
                dtype,
                cm.ld_first as i32,
                second as *const std::ffi::c_void,
                dtype,
                cm.ld_second as i32,
                (&beta as *const f32).cast(),
                c as *mut std::ffi::c_void,
                ty(out),
                cm.ldc as i32,
                compute,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
            )
        };
        launched(
            r,
            &format!("gemm_ex ({operands:?} operands, {out:?} out, {cm:?})"),
        );
    }

    fn sm_count(&self) -> u32 {
        self.sms
    }

    fn synchronize(&self) {
        launched(self.stream.synchronize(), "synchronize")
    }

    fn describe(&self) -> String {
        format!("{}, {}", self.device_name, self.arch)
    }

    fn tf32(&self) -> bool {
        self.tf32
    }

    fn cuda_stream(&self) -> Option<&Arc<CudaStream>> {
        Some(&self.stream)
    }
}

impl CudaBackend {
    /// Opens device `ordinal` (see [`CudaRuntime::new`]).
    pub fn new(ordinal: usize, opts: CudaOptions) -> Result<Self> {
        let rt = CudaRuntime::new(ordinal, opts.tf32)?;
        Ok(GpuBackend::with_runtime(rt, opts))
    }

    /// The compute stream every op runs on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.runtime().stream
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.runtime().ctx
    }

    /// The raw device pointer of a buffer (element 0). Element `i` of an
    /// f32 buffer is at `device_ptr(buf) + 4 * i`. Valid while `buf` lives.
    pub fn device_ptr(&self, buf: &GpuBuf<CudaSlice<f32>>) -> CUdeviceptr {
        self.runtime().addr(&buf.mem)
    }
}
