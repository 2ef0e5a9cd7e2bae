//! A CPU emulator for ringtrain's CUDA kernels.
//!
//! build.rs compiles every `kernels/*.cu` file as host C++ (with
//! `cuda_emu.h`, which defines the CUDA constructs the kernels use) and
//! links in a cooperative scheduler: [`launch`] runs a kernel over a grid on
//! the calling OS thread, each CUDA thread a fiber, `__syncthreads()` a real
//! block-wide barrier. Arguments are checked against the kernel's C
//! parameter types before anything runs.
//!
//! ```
//! use kernel_emu::{Arg, launch};
//! let x = vec![1.0f32; 1000];
//! let mut partial = vec![0.0f32; 4];
//! // SAFETY: the pointers are valid for what the kernel touches.
//! unsafe {
//!     launch(
//!         "sum_squares_partial_f32",
//!         (4, 1, 1),
//!         (256, 1, 1),
//!         &[Arg::I64(1000), Arg::Ptr(x.as_ptr() as u64), Arg::Ptr(partial.as_mut_ptr() as u64)],
//!     )
//! }
//! .unwrap();
//! assert_eq!(partial.iter().sum::<f32>(), 1000.0);
//! ```
//!
//! See README.md for what is and is not emulated.

use std::fmt;

/// One kernel argument, by the kind of its C parameter type: `int` and
/// `unsigned int` take [`Arg::I32`], `long long` and `unsigned long long`
/// take [`Arg::I64`], `float` takes [`Arg::F32`], any pointer takes
/// [`Arg::Ptr`] (a host address, e.g. `v.as_mut_ptr() as u64`; 0 is null).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    I32(i32),
    I64(i64),
    F32(f32),
    Ptr(u64),
}

/// Why a launch did not run (or did not finish).
#[derive(Clone, Debug, PartialEq)]
pub enum EmuError {
    /// No `extern "C" __global__` kernel of that name in kernels/*.cu.
    UnknownKernel { kernel: String },
    /// The kernel takes `expected` parameters; `got` arguments were given.
    ArgCount {
        kernel: String,
        expected: usize,
        got: usize,
    },
    /// Argument `index` does not fit the parameter's C type `c_type`.
    ArgType {
        kernel: String,
        index: usize,
        c_type: String,
        given: Arg,
    },
    /// A grid or block dimension out of CUDA's limits (each at least 1, at
    /// most 1024 threads per block, ...). Nothing ran.
    BadDims { kernel: String, message: String },
    /// Some threads of a block wait at `__syncthreads()` while others have
    /// returned (undefined behaviour on a GPU). Blocks before it have run:
    /// memory may be partly written.
    BarrierDivergence { kernel: String, message: String },
    /// Anything else from the emulator itself (a stack that could not be
    /// mapped, a launch from inside a kernel, ...).
    Internal { kernel: String, message: String },
}

impl fmt::Display for EmuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmuError::UnknownKernel { kernel } => write!(
                f,
                "kernel-emu: unknown kernel `{kernel}` (no `extern \"C\" __global__ void {kernel}(` in kernels/*.cu)"
            ),
            EmuError::ArgCount {
                kernel,
                expected,
                got,
            } => write!(
                f,
                "kernel-emu: kernel `{kernel}`: wrong number of arguments: expected {expected}, got {got}"
            ),
            EmuError::ArgType {
                kernel,
                index,
                c_type,
                given,
            } => write!(
                f,
                "kernel-emu: kernel `{kernel}`: argument {index} is {given:?}, but parameter {index} has C type `{c_type}` (needs {})",
                needed_kind(c_type)
            ),
            EmuError::BadDims { kernel, message } => {
                write!(
                    f,
                    "kernel-emu: kernel `{kernel}`: bad launch dimensions: {message}"
                )
            }
            EmuError::BarrierDivergence { kernel, message } => {
                write!(
                    f,
                    "kernel-emu: kernel `{kernel}`: barrier divergence: {message}"
                )
            }
            EmuError::Internal { kernel, message } => {
                write!(f, "kernel-emu: kernel `{kernel}`: {message}")
            }
        }
    }
}

impl std::error::Error for EmuError {}

/// The Arg kind a C parameter type takes, for messages.
fn needed_kind(c_type: &str) -> &'static str {
    match c_type {
        _ if c_type.ends_with('*') => "Arg::Ptr",
        "int" | "unsigned int" => "Arg::I32",
        "long long" | "unsigned long long" => "Arg::I64",
        "float" => "Arg::F32",
        _ => "an Arg of another kind",
    }
}

// The FFI structs, as in emu_call.h.
#[repr(C)]
struct RawArg {
    tag: u32,
    pad: u32,
    bits: u64,
}

#[repr(C)]
struct Dims {
    grid: [u32; 3],
    block: [u32; 3],
}

#[repr(C)]
struct ErrInfo {
    status: i32,
    index: u32,
    expected: u64,
    c_type: [u8; 64],
    message: [u8; 512],
}

const ST_OK: i32 = 0;
const ST_ARG_COUNT: i32 = 2;
const ST_ARG_TYPE: i32 = 3;
const ST_BAD_DIMS: i32 = 4;
const ST_DIVERGENCE: i32 = 5;

type Thunk = unsafe extern "C" fn(*const RawArg, usize, *const Dims, *mut ErrInfo) -> i32;

struct Kernel {
    name: &'static str,
    selftest: bool,
    thunk: Thunk,
}

// KERNELS: &[Kernel], from build.rs.
include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// The kernels of kernels/*.cu that [`launch`] runs: files by name, then
/// kernels in source order. (The emulator's self-test kernels, named
/// `emu_selftest_*`, can be launched too but are not listed.)
pub fn kernel_names() -> Vec<&'static str> {
    KERNELS
        .iter()
        .filter(|k| !k.selftest)
        .map(|k| k.name)
        .collect()
}

fn c_text(b: &[u8]) -> String {
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..n]).into_owned()
}

/// Runs kernel `name` (an `extern "C" __global__` function of
/// kernels/*.cu) over `grid` x `block` (x, y, z), on the calling OS thread;
/// returns when every thread has finished.
///
/// The arguments are checked against the kernel's parameter types first
/// (see [`Arg`]); a mismatch, unknown kernel or bad dimensions run nothing.
///
/// # Safety
///
/// As for a GPU launch: every [`Arg::Ptr`] must be null or point to host
/// memory valid for every access the kernel makes with these arguments
/// (reads and writes, at the alignment the kernel assumes, e.g. 16 bytes
/// for `float4`), and nothing else may access that memory during the call.
/// The emulator does not check bounds.
pub unsafe fn launch(
    name: &str,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    args: &[Arg],
) -> Result<(), EmuError> {
    let Some(kernel) = KERNELS.iter().find(|k| k.name == name) else {
        return Err(EmuError::UnknownKernel {
            kernel: name.to_string(),
        });
    };
    let raw: Vec<RawArg> = args
        .iter()
        .map(|a| {
            let (tag, bits) = match *a {
                Arg::I32(v) => (0, v as u32 as u64),
                Arg::I64(v) => (1, v as u64),
                Arg::F32(v) => (2, v.to_bits() as u64),
                Arg::Ptr(v) => (3, v),
            };
            RawArg { tag, pad: 0, bits }
        })
        .collect();
    let dims = Dims {
        grid: [grid.0, grid.1, grid.2],
        block: [block.0, block.1, block.2],
    };
    let mut err = ErrInfo {
        status: ST_OK,
        index: 0,
        expected: 0,
        c_type: [0; 64],
        message: [0; 512],
    };
    // SAFETY: the structs match emu_call.h; raw has raw.len() elements;
    // the thunk catches every C++ exception. The kernel's memory accesses
    // are the caller's contract (see # Safety).
    let st = unsafe { (kernel.thunk)(raw.as_ptr(), raw.len(), &dims, &mut err) };
    let kernel = name.to_string();
    let message = c_text(&err.message);
    match st {
        ST_OK => Ok(()),
        ST_ARG_COUNT => Err(EmuError::ArgCount {
            kernel,
            expected: err.expected as usize,
            got: args.len(),
        }),
        ST_ARG_TYPE => Err(EmuError::ArgType {
            kernel,
            index: err.index as usize,
            c_type: c_text(&err.c_type),
            given: args[err.index as usize],
        }),
        ST_BAD_DIMS => Err(EmuError::BadDims { kernel, message }),
        ST_DIVERGENCE => Err(EmuError::BarrierDivergence { kernel, message }),
        _ => Err(EmuError::Internal { kernel, message }),
    }
}
