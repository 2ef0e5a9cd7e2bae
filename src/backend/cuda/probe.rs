//! Is there a usable GPU? Asked without touching anything that panics.
//!
//! cudarc loads the CUDA libraries on first use and panics when one is
//! missing, so the libraries are looked for first (`is_culib_present`),
//! then the driver is asked for its devices; every failure becomes the
//! one-line reason shown in the run header (`backend cpu f32 (no GPU:
//! ...)`) or in the error of `--device cuda`.

use cudarc::driver::CudaContext;

/// What the probe found: the devices, or why there is no usable one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The driver, NVRTC and cuBLAS load and `count` devices exist.
    Usable { count: usize },
    /// Why the CUDA backend cannot run here (one line).
    Unusable(String),
}

/// Looks for libcuda, libnvrtc and libcublas, then counts devices.
/// Never panics. `RINGTRAIN_NO_GPU=1` pretends there is none (tests).
pub fn probe() -> Probe {
    if std::env::var_os("RINGTRAIN_NO_GPU").is_some_and(|v| v != "0") {
        return Probe::Unusable("RINGTRAIN_NO_GPU is set".into());
    }
    // SAFETY: these only try to dlopen the libraries.
    let (driver, nvrtc, cublas) = unsafe {
        (
            cudarc::driver::sys::is_culib_present(),
            cudarc::nvrtc::sys::is_culib_present(),
            cudarc::cublas::sys::is_culib_present(),
        )
    };
    if !driver {
        return Probe::Unusable("libcuda.so not found".into());
    }
    if !nvrtc {
        return Probe::Unusable("libnvrtc.so not found (needed to compile the kernels)".into());
    }
    if !cublas {
        return Probe::Unusable("libcublas.so not found".into());
    }
    match std::panic::catch_unwind(CudaContext::device_count) {
        Ok(Ok(n)) if n > 0 => Probe::Usable { count: n as usize },
        Ok(Ok(_)) => Probe::Unusable("the CUDA driver reports no device".into()),
        Ok(Err(e)) => Probe::Unusable(format!("CUDA driver: {e}")),
        Err(_) => Probe::Unusable("the CUDA driver could not be initialised".into()),
    }
}

/// The CUDA version the driver supports (`cuDriverGetVersion`: 13000 is
/// (13, 0)); None without libcuda or when the call fails.
pub fn driver_cuda_version() -> Option<(i32, i32)> {
    // SAFETY: only tries to dlopen the library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return None;
    }
    let mut v = 0;
    // SAFETY: a valid out-pointer; callable before cuInit.
    let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    (r == cudarc::driver::sys::CUresult::CUDA_SUCCESS && v > 0).then_some((v / 1000, v % 1000 / 10))
}

/// The device a rank uses: its local rank modulo the device count.
pub fn device_for(local_rank: usize, count: usize) -> usize {
    local_rank % count.max(1)
}

/// One line per device for `ringtrain info`: name, compute capability,
/// memory; or the reason there is none.
pub fn describe() -> Vec<String> {
    match probe() {
        Probe::Unusable(why) => vec![format!("gpu: none usable ({why})")],
        Probe::Usable { count } => std::iter::once(versions_line())
            .chain((0..count).map(|i| match CudaContext::new(i) {
                Ok(ctx) => {
                    let name = ctx.name().unwrap_or_else(|e| format!("? ({e})"));
                    let cc = ctx
                        .compute_capability()
                        .map(|(a, b)| format!("{a}.{b}"))
                        .unwrap_or_else(|e| format!("? ({e})"));
                    let mem = ctx
                        .total_mem()
                        .map(|b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64))
                        .unwrap_or_else(|e| format!("? ({e})"));
                    format!("gpu {i}: {name}, compute capability {cc}, {mem}")
                }
                Err(e) => format!("gpu {i}: cannot open ({e})"),
            }))
            .collect(),
    }
}

/// "cuda: driver CUDA 13.0, NVRTC 13.0" for `ringtrain info`.
fn versions_line() -> String {
    let v = |x: Option<(i32, i32)>| x.map_or("?".to_string(), |(a, b)| format!("{a}.{b}"));
    let nvrtc = super::kernels::nvrtc_version().ok();
    format!(
        "cuda: driver CUDA {}, NVRTC {}",
        v(driver_cuda_version()),
        v(nvrtc)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_is_local_rank_modulo_count() {
        assert_eq!(device_for(0, 4), 0);
        assert_eq!(device_for(5, 4), 1);
        assert_eq!(device_for(3, 0), 0);
    }

    #[test]
    fn probe_never_panics_and_is_forced_off_by_the_env() {
        // Whatever this machine has, the probe returns.
        let _ = probe();
    }
}
