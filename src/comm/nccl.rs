//! NCCL: the communicator of GPU ranks.
//!
//! * [`probe`] checks, before anything touches CUDA or NCCL, that libcuda,
//!   a GPU and libnccl are there: cudarc loads them on first use and
//!   *panics* when one is missing.
//! * [`world_comm`] makes one NCCL communicator per rank, on GPU
//!   [`device_ordinal`]: rank 0 creates the unique id, which reaches the
//!   other ranks over MPI (MPI bootstrap) or through the rendezvous file
//!   (env bootstrap, [`share_id`]).
//! * [`NcclComm`] implements [`Communicator`]: host slices are staged
//!   through device buffers on the communicator's own stream, so NCCL
//!   carries every collective of a run that has no MPI.
//! * [`Handle`] (the communicator and its stream) is shared with
//!   `gradsync::nccl`, the all-reduce of device gradients.
//!
//! Everything NCCL does in a process runs on ONE stream (the
//! communicator's), so the order of NCCL calls is the program order, the
//! same on every rank.

use std::cell::Cell;
use std::ffi::{CStr, c_void};

use std::rc::Rc;
use std::sync::Arc;

use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{CudaContext, CudaStream, DevicePtrMut, DeviceRepr, DriverError};
use cudarc::nccl::NcclType;
use cudarc::nccl::result as nr;
use cudarc::nccl::sys as ns;
use half::bf16;

use super::{Communicator, agree};
use crate::error::{Error, Result};
use crate::rendezvous::Rendezvous;
use crate::world::World;

/// Bytes of an NCCL unique id.
pub const ID_BYTES: usize = 128;

/// What a usable NCCL installation looks like on this machine.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    /// CUDA devices visible to this process (> 0).
    pub devices: usize,
    /// `ncclGetVersion`: 22703 is 2.27.3.
    pub version: i32,
}

/// NCCL's version code as "2.27.3".
pub fn version_string(code: i32) -> String {
    format!("{}.{}.{}", code / 10000, code % 10000 / 100, code % 100)
}

/// Whether libcuda, a GPU and libnccl are usable, without a panic when one
/// is missing. The error says what is missing and how to provide it.
pub fn probe() -> Result<Probe> {
    // SAFETY: only tries to dlopen the library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(Error::Comm(
            "NCCL (--comm nccl, and --comm auto on several GPU ranks) needs a GPU: the CUDA \
             driver library (libcuda.so) was not found"
                .into(),
        ));
    }
    let devices = CudaContext::device_count()
        .map_err(|e| Error::Comm(format!("NCCL (--comm nccl) needs a GPU: CUDA reports {e}")))?;
    if devices <= 0 {
        return Err(Error::Comm(
            "NCCL (--comm nccl) needs a GPU: CUDA sees no device".into(),
        ));
    }
    // SAFETY: only tries to dlopen the library.
    if !unsafe { ns::is_culib_present() } {
        return Err(Error::Comm(
            "NCCL (--comm nccl): the NCCL library was not found. cudarc looks for `libnccl.so` (not \
             libnccl.so.2); the PyPI wheel (nvidia-nccl-cu13, which PyTorch installs) ships only \
             libnccl.so.2, so make a symlink libnccl.so -> .../nvidia/nccl/lib/libnccl.so.2 in a \
             directory on LD_LIBRARY_PATH (benches/gpu.sh does)"
                .into(),
        ));
    }
    let version = nr::get_nccl_version().map_err(|e| nccl_error("ncclGetVersion", e))?;
    Ok(Probe {
        devices: devices as usize,
        version,
    })
}

/// The GPU of a rank: its local rank modulo the GPUs it sees. The CUDA
/// backend uses the same rule, so a rank's kernels and its communicator
/// share one device.
pub fn device_ordinal(local_rank: usize, devices: usize) -> usize {
    local_rank % devices.max(1)
}

/// NCCL refuses two ranks on one GPU unless NCCL >= 2.30 and
/// `NCCL_MULTI_RANK_GPU_ENABLE=1`: say so before NCCL fails less clearly.
fn check_ranks_per_gpu(local_size: usize, p: &Probe, enabled: bool) -> Result<()> {
    if local_size <= p.devices {
        return Ok(());
    }
    if p.version >= 23000 && enabled {
        return Ok(());
    }
    Err(Error::config(format!(
        "{local_size} ranks on this host share {} GPU(s); NCCL puts two ranks on one GPU only \
         with NCCL >= 2.30 and NCCL_MULTI_RANK_GPU_ENABLE=1 (found NCCL {}, \
         NCCL_MULTI_RANK_GPU_ENABLE {}). Start at most one rank per GPU",
        p.devices,
        version_string(p.version),
        if enabled { "=1" } else { "unset" }
    )))
}

/// NCCL's own words for an error (`ncclGetErrorString`).
pub(crate) fn nccl_error(what: &str, e: nr::NcclError) -> Error {
    // SAFETY: NCCL returns a static string for every result code.
    let text = unsafe { CStr::from_ptr(ns::ncclGetErrorString(e.0)) };
    Error::Comm(format!(
        "{what} failed: {} ({:?}); NCCL_DEBUG=WARN shows NCCL's details",
        text.to_string_lossy(),
        e.0
    ))
}

pub(crate) fn cuda_error(what: &str) -> impl Fn(DriverError) -> Error + '_ {
    move |e| Error::Comm(format!("CUDA {what} failed: {e}"))
}

// ---------------------------------------------------------------------------
// The unique id.

/// Creates a unique id (rank 0).
pub fn new_id() -> Result<[u8; ID_BYTES]> {
    let id = nr::get_uniqueid().map_err(|e| nccl_error("ncclGetUniqueId", e))?;
    Ok(id.internal.map(|c| c as u8))
}

/// Passes rank 0's id to every rank through the rendezvous file. Rank 0
/// runs `make` and publishes a status byte and the id, or a failure
/// marker when `make` failed, so that the other ranks stop at once with
/// [`Error::OtherRank`] instead of waiting for the timeout; the other
/// ranks never run `make`.
pub fn share_id(
    rdzv: &Rendezvous,
    rank: usize,
    make: impl FnOnce() -> Result<[u8; ID_BYTES]>,
) -> Result<[u8; ID_BYTES]> {
    let mut payload = [0u8; ID_BYTES + 1];
    if rank == 0 {
        let made = make();
        if let Ok(id) = &made {
            payload[0] = 1;
            payload[1..].copy_from_slice(id);
        }
        rdzv.share(0, &payload, payload.len())?;
        return made;
    }
    let got = rdzv.share(rank, &[], payload.len())?;
    if got[0] != 1 {
        return Err(Error::OtherRank(0));
    }
    payload.copy_from_slice(&got);
    let mut id = [0u8; ID_BYTES];
    id.copy_from_slice(&payload[1..]);
    Ok(id)
}

// ---------------------------------------------------------------------------
// The communicator.

/// One NCCL communicator and the stream all of this process's NCCL work
/// runs on (shared by [`NcclComm`] and the device gradient sync).
pub struct Handle {
    comm: ns::ncclComm_t,
    stream: Arc<CudaStream>,
    rank: usize,
    size: usize,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Every collective of a finished command has been waited for (the
        // staged ones wait; gradient buckets come before them on the one
        // stream). ncclCommAbort frees NCCL's resources without waiting for
        // other ranks, so a rank that stops early never hangs here.
        // SAFETY: the communicator was created by ncclCommInitRank and is
        // not used after this.
        let _ = unsafe { nr::comm_abort(self.comm) };
    }
}

impl Handle {
    /// The stream every NCCL call of this process is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// `ncclAllReduce` on `stream` (raw device pointers of `count` T).
    ///
    /// # Safety
    /// `send` and `recv` must be valid device memory of `count` elements on
    /// this communicator's GPU, not written by other streams meanwhile.
    pub unsafe fn all_reduce<T: NcclType>(
        &self,
        send: CUdeviceptr,
        recv: CUdeviceptr,
        count: usize,
        op: ns::ncclRedOp_t,
    ) -> Result<()> {
        // SAFETY: as the caller promises.
        unsafe {
            nr::all_reduce(
                send as *const c_void,
                recv as *mut c_void,
                count,
                T::as_nccl_type(),
                op,
                self.comm,
                self.stream.cu_stream() as ns::cudaStream_t,
            )
        }
        .map(|_| ())
        .map_err(|e| nccl_error("ncclAllReduce", e))
    }
}

/// The NCCL communicator of this rank (see the module comment). Not Send:
/// it belongs to the thread that made it, like NCCL's own `Comm`.
pub struct NcclComm {
    h: Rc<Handle>,
    version: i32,
}

impl NcclComm {
    /// `ncclCommInitRank` on the GPU of `stream`, with rank 0's `id`.
    pub fn new(
        stream: Arc<CudaStream>,
        rank: usize,
        size: usize,
        id: [u8; ID_BYTES],
        version: i32,
    ) -> Result<Self> {
        let ranks = i32::try_from(size).map_err(|_| Error::config("too many ranks for NCCL"))?;
        stream
            .context()
            .bind_to_thread()
            .map_err(cuda_error("binding the GPU context"))?;
        let id = ns::ncclUniqueId {
            internal: id.map(|b| b as ::core::ffi::c_char),
        };
        let mut comm = std::mem::MaybeUninit::uninit();
        // SAFETY: `comm` is written by NCCL on success; rank < size.
        let comm = unsafe {
            nr::comm_init_rank(comm.as_mut_ptr(), ranks, id, rank as i32)
                .map_err(|e| nccl_error("ncclCommInitRank", e))?;
            comm.assume_init()
        };
        Ok(NcclComm {
            h: Rc::new(Handle {
                comm,
                stream,
                rank,
                size,
            }),
            version,
        })
    }

    /// The stream every NCCL operation of this process runs on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.h.stream
    }

    /// The GPU of this communicator.
    /// The communicator and its stream, for the device gradient sync.
    pub fn handle(&self) -> Rc<Handle> {
        self.h.clone()
    }

    pub fn ordinal(&self) -> usize {
        self.h.stream.context().ordinal()
    }

    /// `ncclGetVersion` of the library in use.
    pub fn version(&self) -> i32 {
        self.version
    }

    /// `ncclAllReduce` of `count` T from `send` into `recv` (the same
    /// pointer: in place) on the communicator's stream; `avg` picks ncclAvg
    /// over ncclSum. Returns once the call is queued (synchronise the
    /// stream to wait for it).
    ///
    /// # Safety
    /// `send` and `recv` must be device memory of at least `count` T on
    /// this GPU, not used by other streams until the operation is done.
    pub unsafe fn all_reduce_device<T: NcclType>(
        &self,
        send: CUdeviceptr,
        recv: CUdeviceptr,
        count: usize,
        avg: bool,
    ) -> Result<()> {
        let op = if avg {
            ns::ncclRedOp_t::ncclAvg
        } else {
            ns::ncclRedOp_t::ncclSum
        };
        // SAFETY: as the caller promises.
        unsafe { self.h.all_reduce::<T>(send, recv, count, op) }
    }

    /// A host slice through a device buffer: copy in, `op`, copy back.
    fn staged<T: DeviceRepr + NcclType + Copy>(
        &self,
        buf: &mut [T],
        op: impl FnOnce(CUdeviceptr, &Handle) -> Result<()>,
    ) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let s = &self.h.stream;
        let mut d = s.clone_htod(buf).map_err(cuda_error("copy to the GPU"))?;
        {
            let (p, _sync) = d.device_ptr_mut(s);
            op(p, &self.h)?;
        }
        // Copying into plain host memory waits for the stream.
        s.memcpy_dtoh(&d, buf)
            .map_err(cuda_error("copy from the GPU"))
    }

    /// `ncclAllGather` of `mine` (equal lengths on all ranks).
    fn gather<T: DeviceRepr + NcclType + Copy + Default>(&self, mine: &[T]) -> Result<Vec<T>> {
        let mut out = vec![T::default(); mine.len() * self.h.size];
        if mine.is_empty() {
            return Ok(out);
        }
        let s = &self.h.stream;
        let send = s.clone_htod(mine).map_err(cuda_error("copy to the GPU"))?;
        let mut recv = s.clone_htod(&out).map_err(cuda_error("copy to the GPU"))?;
        {
            use cudarc::driver::DevicePtr;
            let (sp, _s1) = send.device_ptr(s);
            let (rp, _s2) = recv.device_ptr_mut(s);
            // SAFETY: both buffers live on this stream's GPU, sized for
            // `mine.len()` and `size * mine.len()` elements.
            unsafe {
                nr::all_gather(
                    sp as *const c_void,
                    rp as *mut c_void,
                    mine.len(),
                    T::as_nccl_type(),
                    self.h.comm,
                    s.cu_stream() as ns::cudaStream_t,
                )
            }
            .map_err(|e| nccl_error("ncclAllGather", e))?;
        }
        s.memcpy_dtoh(&recv, &mut out)
            .map_err(cuda_error("copy from the GPU"))?;
        Ok(out)
    }
}

fn sum_in_place<T: NcclType>(p: CUdeviceptr, count: usize, h: &Handle) -> Result<()> {
    // SAFETY: `p` is a staging buffer of `count` T on the handle's stream.
    unsafe { h.all_reduce::<T>(p, p, count, ns::ncclRedOp_t::ncclSum) }
}

impl Communicator for NcclComm {
    fn rank(&self) -> usize {
        self.h.rank
    }
    fn size(&self) -> usize {
        self.h.size
    }
    fn name(&self) -> &'static str {
        "nccl"
    }
    fn nccl(&self) -> Option<&NcclComm> {
        Some(self)
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let n = buf.len();
        self.staged(buf, |p, h| sum_in_place::<f32>(p, n, h))
    }
    /// Accumulated in f32 (NCCL's bf16 sum would round at every step),
    /// rounded to bf16 once.
    fn all_reduce_sum_bf16(&self, buf: &mut [bf16]) -> Result<()> {
        let mut wide: Vec<f32> = buf.iter().map(|v| v.to_f32()).collect();
        self.all_reduce_sum(&mut wide)?;
        for (b, w) in buf.iter_mut().zip(&wide) {
            *b = bf16::from_f32(*w);
        }
        Ok(())
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        let n = buf.len();
        self.staged(buf, |p, h| sum_in_place::<f64>(p, n, h))
    }
    fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>> {
        self.gather(&[value])
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<u8>> {
        self.gather(mine)
    }
    fn broadcast(&self, root: usize, buf: &mut [u8]) -> Result<()> {
        let n = buf.len();
        self.staged(buf, |p, h| {
            // SAFETY: `p` is a staging buffer of `n` bytes on the stream.
            unsafe {
                nr::broadcast(
                    p as *const c_void,
                    p as *mut c_void,
                    n,
                    <u8 as NcclType>::as_nccl_type(),
                    root as i32,
                    h.comm,
                    h.stream.cu_stream() as ns::cudaStream_t,
                )
            }
            .map(|_| ())
            .map_err(|e| nccl_error("ncclBroadcast", e))
        })
    }
    /// A one-element all-reduce, waited for: no rank returns before every
    /// rank has entered.
    fn barrier(&self) -> Result<()> {
        self.all_reduce_sum(&mut [0.0])
    }
}

// ---------------------------------------------------------------------------
// Setting up the world's communicator.

/// A stream on GPU `ordinal` for NCCL.
pub fn open_stream(ordinal: usize) -> Result<Arc<CudaStream>> {
    let ctx = CudaContext::new(ordinal).map_err(cuda_error("opening the GPU"))?;
    ctx.new_stream()
        .map_err(cuda_error("creating the communication stream"))
}

fn multi_rank_gpu_enabled() -> bool {
    std::env::var("NCCL_MULTI_RANK_GPU_ENABLE").is_ok_and(|v| v.trim() == "1")
}

/// The probe plus the checks that need the world (several ranks per GPU).
fn probe_for(world: &World) -> Result<Probe> {
    let p = probe()?;
    check_ranks_per_gpu(world.local_size, &p, multi_rank_gpu_enabled())?;
    Ok(p)
}

/// The NCCL communicator of every rank of `world`, or the same failure on
/// every rank: with MPI each step is agreed over MPI (one rank prints);
/// without MPI rank 0 publishes its id or its failure through the
/// rendezvous file, so the other ranks stop with [`Error::OtherRank`] when
/// rank 0 failed. A failure on another rank is that rank's own message.
pub fn world_comm(world: &World) -> Result<NcclComm> {
    let (rank, size) = (world.rank, world.size);
    if crate::world::mpi_is_up() {
        let base = super::control(world);
        let p = agree(&*base, probe_for(world))?;
        let mut id = agree(
            &*base,
            if rank == 0 {
                new_id()
            } else {
                Ok([0; ID_BYTES])
            },
        )?;
        base.broadcast(0, &mut id)?;
        let ordinal = device_ordinal(world.local_rank, p.devices);
        let stream = agree(&*base, open_stream(ordinal))?;
        let comm = NcclComm::new(stream, rank, size, id, p.version);
        return agree(&*base, comm);
    }
    // No MPI. One rank needs no rendezvous.
    let (id, p, rdzv) = if size == 1 {
        let p = probe_for(world)?;
        (new_id()?, p, None)
    } else {
        // The same arguments on every rank: rank 0 reports a missing
        // --rendezvous.
        let rdzv = match world.rendezvous() {
            Ok(r) => r,
            Err(_) if rank != 0 => return Err(Error::OtherRank(0)),
            Err(e) => return Err(e),
        };
        let probed = Cell::new(None);
        let id = share_id(&rdzv, rank, || {
            let p = probe_for(world)?;
            probed.set(Some(p));
            new_id()
        })?;
        let p = match probed.get() {
            Some(p) => p,
            None => probe_for(world).map_err(|e| Error::Comm(format!("rank {rank}: {e}")))?,
        };
        (id, p, Some(rdzv))
    };
    let ordinal = device_ordinal(world.local_rank, p.devices);
    let stream = open_stream(ordinal)?;
    let comm = NcclComm::new(stream, rank, size, id, p.version)?;
    // Every rank has joined, so every rank read the id: rank 0 removes the
    // file that carried it.
    if let (Some(r), 0) = (rdzv, rank) {
        r.remove();
    }
    Ok(comm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A fresh empty directory, removed on drop.
    fn dir(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("ringtrain-nccl-{name}-"))
            .tempdir()
            .unwrap()
    }

    fn rdzv(d: &std::path::Path, run: &str, timeout_ms: u64) -> Rendezvous {
        Rendezvous {
            dir: d.to_path_buf(),
            run_id: run.into(),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    fn fake_id(seed: u8) -> [u8; ID_BYTES] {
        std::array::from_fn(|i| (i as u8).wrapping_mul(31) ^ seed)
    }

    #[test]
    fn id_reaches_every_rank_through_the_rendezvous_file() {
        let d = dir("share");
        let others: Vec<_> = (1..4)
            .map(|rank| {
                let r = rdzv(d.path(), "nccl-1", 20_000);
                std::thread::spawn(move || {
                    share_id(&r, rank, || panic!("only rank 0 makes the id"))
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let root = share_id(&rdzv(d.path(), "nccl-1", 20_000), 0, || Ok(fake_id(9))).unwrap();
        assert_eq!(root, fake_id(9));
        for o in others {
            assert_eq!(o.join().unwrap().unwrap(), fake_id(9));
        }
    }

    #[test]
    fn rank_0_failure_stops_the_others_without_waiting_for_the_timeout() {
        let d = dir("fail");
        let other = {
            let r = rdzv(d.path(), "nccl-2", 60_000);
            std::thread::spawn(move || share_id(&r, 1, || Ok(fake_id(1))))
        };
        let root = share_id(&rdzv(d.path(), "nccl-2", 60_000), 0, || {
            Err(Error::Comm("no GPU here".into()))
        });
        assert!(root.unwrap_err().to_string().contains("no GPU here"));
        // Rank 1 learns of it from the file, not from its 60 s timeout
        // (which would be a "timed out" error, not OtherRank).
        assert!(matches!(other.join().unwrap(), Err(Error::OtherRank(0))));
    }

    #[test]
    fn a_missing_rank_0_is_a_timeout_error() {
        let d = dir("timeout");
        let e = share_id(&rdzv(d.path(), "nccl-3", 200), 1, || Ok(fake_id(0))).unwrap_err();
        assert!(e.to_string().contains("timed out"), "{e}");
    }

    #[test]
    fn versions_and_devices() {
        assert_eq!(version_string(22703), "2.27.3");
        assert_eq!(version_string(23001), "2.30.1");
        assert_eq!(device_ordinal(3, 2), 1);
        assert_eq!(device_ordinal(0, 8), 0);
        assert_eq!(device_ordinal(5, 0), 0);
    }

    #[test]
    fn two_ranks_per_gpu_need_nccl_2_30_and_the_variable() {
        let old = Probe {
            devices: 1,
            version: 22703,
        };
        let new = Probe {
            devices: 1,
            version: 23000,
        };
        assert!(check_ranks_per_gpu(1, &old, false).is_ok());
        assert!(
            check_ranks_per_gpu(0, &old, false).is_ok(),
            "unknown local size"
        );
        let e = check_ranks_per_gpu(2, &old, true).unwrap_err().to_string();
        assert!(e.contains("NCCL 2.27.3"), "{e}");
        let e = check_ranks_per_gpu(2, &new, false).unwrap_err().to_string();
        assert!(e.contains("NCCL_MULTI_RANK_GPU_ENABLE unset"), "{e}");
        assert!(check_ranks_per_gpu(2, &new, true).is_ok());
    }
}
