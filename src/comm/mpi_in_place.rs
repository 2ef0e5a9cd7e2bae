//! MPI_Allreduce with MPI_IN_PLACE through rsmpi's raw FFI.
//!
//! rsmpi (mpi 0.8) wraps only out-of-place all-reduce and mpi-sys exports
//! no MPI_IN_PLACE constant. The constant is a sentinel pointer fixed by
//! each implementation's ABI: `(void *) 1` in Open MPI's mpi.h and
//! `(void *) -1` in MPICH's (Intel MPI and MVAPICH are MPICH derivatives).
//! The library names itself at run time (MPI_Get_library_version), so the
//! sentinel is chosen from that; an MPI not recognised gets `None` and the
//! caller keeps its scratch-buffer path.

use std::ffi::c_void;
use std::sync::OnceLock;

use mpi::ffi;
use mpi::raw::AsRaw;
use mpi::topology::SimpleCommunicator;

/// The MPI_IN_PLACE sentinel of the MPI library this process runs on.
pub fn in_place() -> Option<usize> {
    static SENTINEL: OnceLock<Option<usize>> = OnceLock::new();
    *SENTINEL.get_or_init(|| {
        let v = mpi::environment::library_version().ok()?;
        sentinel_for(&v)
    })
}

/// The sentinel for a library version string (see the module docs).
pub fn sentinel_for(version: &str) -> Option<usize> {
    if version.contains("Open MPI") {
        Some(1)
    } else if version.contains("MPICH")
        || version.contains("Intel(R) MPI")
        || version.contains("MVAPICH")
    {
        Some(usize::MAX)
    } else {
        None
    }
}

/// Element types with an MPI datatype here.
pub trait MpiElem: Copy {
    fn datatype() -> ffi::MPI_Datatype;
}
impl MpiElem for f32 {
    fn datatype() -> ffi::MPI_Datatype {
        // SAFETY: an MPI handle constant, initialised by mpi-sys.
        unsafe { ffi::RSMPI_FLOAT }
    }
}
impl MpiElem for f64 {
    fn datatype() -> ffi::MPI_Datatype {
        // SAFETY: as above.
        unsafe { ffi::RSMPI_DOUBLE }
    }
}

/// Σ over ranks into `buf` with MPI_Allreduce(MPI_IN_PLACE, buf, ...);
/// false (nothing done) where the sentinel is unknown. Counts above
/// i32::MAX go in pieces.
pub fn all_reduce_sum_in_place<T: MpiElem>(comm: &SimpleCommunicator, buf: &mut [T]) -> bool {
    let Some(sentinel) = in_place() else {
        return false;
    };
    const PIECE: usize = 1 << 30;
    for piece in buf.chunks_mut(PIECE) {
        // SAFETY: MPI is initialised (we hold a communicator); `piece` is
        // a valid, exclusively borrowed buffer of `piece.len()` elements of
        // the datatype given; the send buffer is the library's own
        // MPI_IN_PLACE sentinel, which it never dereferences. The default
        // error handler aborts the job on an error.
        unsafe {
            ffi::MPI_Allreduce(
                sentinel as *const c_void,
                piece.as_mut_ptr() as *mut c_void,
                piece.len() as i32,
                T::datatype(),
                ffi::RSMPI_SUM,
                comm.as_raw(),
            );
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::sentinel_for;

    #[test]
    fn sentinels_follow_the_implementation() {
        assert_eq!(
            sentinel_for("Open MPI v4.1.4, package: Debian OpenMPI, ident: 4.1.4"),
            Some(1)
        );
        assert_eq!(
            sentinel_for("MPICH Version:\t4.0.2\nMPICH Release date: ..."),
            Some(usize::MAX)
        );
        assert_eq!(sentinel_for("Some Other MPI 1.0"), None);
    }
}
