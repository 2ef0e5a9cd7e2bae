//! The CUDA kernel sources (kernels/*.cu, embedded) and their NVRTC
//! compilation for one architecture, with an on-disk PTX cache.
//!
//! Nothing here touches a GPU: [`compile`] only needs libnvrtc, which is
//! how tests/nvrtc.rs checks every kernel file on a machine without one.

use std::path::PathBuf;

use cudarc::nvrtc::{CompileOptions, Ptx, compile_ptx_with_opts};

/// One kernel family: its file name and source text.
pub struct Source {
    pub file: &'static str,
    pub text: &'static str,
    /// The kernels (extern "C" functions) the backend loads from it.
    pub kernels: &'static [&'static str],
}

/// Every kernel file, embedded at build time.
pub const SOURCES: &[Source] = &[
    Source {
        file: "act.cu",
        text: include_str!("../../../kernels/act.cu"),
        kernels: &[
            "bias_act_f32",
            "bias_act_f32_v4",
            "act_backward_f32",
            "act_backward_f32_v4",
            "bias_act_bf16",
            "bias_act_bf16_v4",
            "act_backward_bf16",
            "act_backward_bf16_v4",
        ],
    },
    Source {
        file: "loss.cu",
        text: include_str!("../../../kernels/loss.cu"),
        kernels: &["softmax_ce_f32", "bce_logits_f32", "mse_f32"],
    },
    Source {
        file: "reduce.cu",
        text: include_str!("../../../kernels/reduce.cu"),
        kernels: &[
            "sum_squares_partial_f32",
            "finish_sum_f32",
            "col_sum_f32",
            "col_sum_bf16",
            "col_sum_finish_f32",
            "scale_f32",
        ],
    },
    Source {
        file: "optim.cu",
        text: include_str!("../../../kernels/optim.cu"),
        kernels: &["sgd_update_f32", "adamw_update_f32"],
    },
    Source {
        file: "cast.cu",
        text: include_str!("../../../kernels/cast.cu"),
        kernels: &["f32_to_bf16", "bf16_to_f32"],
    },
    Source {
        file: "check.cu",
        text: include_str!("../../../kernels/check.cu"),
        kernels: &["count_nonfinite_f32"],
    },
];

/// The headers the kernel files include (`#include "NAME"`), embedded.
pub const HEADERS: &[(&str, &str)] = &[
    ("bf16.cuh", include_str!("../../../kernels/bf16.cuh")),
    (
        "block_sum.cuh",
        include_str!("../../../kernels/block_sum.cuh"),
    ),
];

/// The source NVRTC compiles: the file with each `#include "NAME"` of
/// [`HEADERS`] replaced by the header's text (the binary carries no
/// kernel directory; the CPU emulator of the tests includes the files).
pub fn expanded(src: &Source) -> String {
    let mut text = src.text.to_string();
    for (name, header) in HEADERS {
        text = text.replace(&format!("#include \"{name}\""), header);
    }
    text
}

/// `compute_XY` for a compute capability (X, Y).
pub fn arch_for(major: i32, minor: i32) -> String {
    format!("compute_{major}{minor}")
}

/// The NVRTC options every kernel file is compiled with.
pub fn options(arch: &str, include_paths: &[String]) -> CompileOptions {
    CompileOptions {
        include_paths: include_paths.to_vec(),
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()],
        ..Default::default()
    }
}

/// True when libnvrtc can be loaded (cudarc panics on first use otherwise).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// NVRTC's (major, minor) version; call only when [`nvrtc_present`].
pub fn nvrtc_version() -> Result<(i32, i32), String> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two valid out-pointers.
    let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if r == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        Ok((major, minor))
    } else {
        Err(format!("nvrtcVersion failed: {r:?}"))
    }
}

/// Whether the driver can load the PTX this NVRTC makes: PTX carries the
/// ISA version of the CUDA that wrote it, and a driver JIT-compiles only
/// ISA versions up to its own CUDA version (minor-version compatibility
/// covers machine code, not PTX). `driver` is `cuDriverGetVersion`'s
/// (major, minor): 13000 is (13, 0).
pub fn ptx_loadable(nvrtc: (i32, i32), driver: (i32, i32)) -> Result<(), String> {
    if nvrtc <= driver {
        return Ok(());
    }
    Err(format!(
        "libnvrtc is CUDA {}.{} but the driver supports CUDA {}.{}: the driver cannot load \
         the PTX it makes. Put the libnvrtc of CUDA {}.{} or older first on LD_LIBRARY_PATH \
         (e.g. the PyPI wheel nvidia-cuda-nvrtc=={}.{}.*)",
        nvrtc.0, nvrtc.1, driver.0, driver.1, driver.0, driver.1, driver.0, driver.1
    ))
}

/// Compiles one kernel file to PTX text for `arch` (e.g. "compute_90").
/// The error carries NVRTC's log. Needs libnvrtc, no GPU.
pub fn compile(src: &Source, arch: &str, include_paths: &[String]) -> Result<String, String> {
    if !nvrtc_present() {
        return Err("libnvrtc not found".into());
    }
    let opts = CompileOptions {
        name: Some(src.file.to_string()),
        ..options(arch, include_paths)
    };
    match compile_ptx_with_opts(expanded(src), opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(cudarc::nvrtc::CompileError::CompileError { log, .. }) => Err(format!(
            "{}: NVRTC compile error for {arch}:\n{}",
            src.file,
            log.to_string_lossy()
        )),
        Err(e) => Err(format!("{}: NVRTC: {e}", src.file)),
    }
}

/// Where compiled PTX is cached: `$XDG_CACHE_HOME/ringtrain/ptx`, else
/// `~/.cache/ringtrain/ptx`; `RINGTRAIN_PTX_CACHE` overrides; `None` if
/// no home is known.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("RINGTRAIN_PTX_CACHE") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("ringtrain").join("ptx"))
}

/// Cache file name for a source, arch and NVRTC version.
pub fn cache_key(src: &Source, arch: &str, nvrtc: (i32, i32)) -> String {
    let opts = format!("{:?}", options(arch, &[]).options);
    let v = format!("{}.{}", nvrtc.0, nvrtc.1);
    let h = crate::digest::hash64(&[
        expanded(src).as_bytes(),
        arch.as_bytes(),
        v.as_bytes(),
        opts.as_bytes(),
    ]);
    format!(
        "{}-{arch}-nvrtc{v}-{h:016x}.ptx",
        src.file.trim_end_matches(".cu")
    )
}

/// PTX of one file for `arch`: from the cache when there, else compiled
/// and stored. A cache that cannot be read or written is only skipped.
pub fn ptx_cached(src: &Source, arch: &str, include_paths: &[String]) -> Result<Ptx, String> {
    let nvrtc = nvrtc_version()?;
    let path = cache_dir().map(|d| d.join(cache_key(src, arch, nvrtc)));
    if let Some(p) = &path {
        if let Ok(text) = std::fs::read_to_string(p) {
            if text.contains(".entry") {
                return Ok(Ptx::from_src(text));
            }
        }
    }
    let text = compile(src, arch, include_paths)?;
    if let Some(p) = &path {
        // Atomically: other ranks may read it. A cache that cannot be
        // written is only skipped.
        if p.parent()
            .map(std::fs::create_dir_all)
            .unwrap_or(Ok(()))
            .is_ok()
        {
            let _ = crate::fsutil::write_atomic(p, text.as_bytes());
        }
    }
    Ok(Ptx::from_src(text))
}

/// Include paths for NVRTC from `RINGTRAIN_CUDA_INCLUDE` (a `:`-separated
/// list): extra directories for `#include`s the kernels do not inline
/// (kernels/*.cuh are inlined by `expand_includes`).
pub fn include_paths_from_env() -> Vec<String> {
    std::env::var("RINGTRAIN_CUDA_INCLUDE")
        .map(|v| {
            v.split(':')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_kernel_is_defined_in_its_file() {
        for s in SOURCES {
            for k in s.kernels {
                assert!(
                    s.text.contains(&format!("__global__ void {k}(")),
                    "{}: no kernel {k}",
                    s.file
                );
            }
        }
    }

    #[test]
    fn includes_are_expanded() {
        for s in SOURCES {
            let text = expanded(s);
            assert!(!text.contains("#include"), "{}: an include is left", s.file);
        }
        let act = SOURCES.iter().find(|s| s.file == "act.cu").unwrap();
        assert!(expanded(act).contains("f32_to_bf16_bits"));
    }

    #[test]
    fn cache_key_changes_with_source_arch_and_version() {
        let a = &SOURCES[0];
        let b = &SOURCES[1];
        let k = cache_key(a, "compute_90", (13, 0));
        assert_ne!(k, cache_key(b, "compute_90", (13, 0)));
        assert_ne!(k, cache_key(a, "compute_80", (13, 0)));
        assert_ne!(k, cache_key(a, "compute_90", (13, 1)));
        assert_eq!(k, cache_key(a, "compute_90", (13, 0)));
        assert_eq!(arch_for(9, 0), "compute_90");
    }

    #[test]
    fn ptx_of_a_newer_nvrtc_than_the_driver_is_refused_with_the_fix() {
        assert!(ptx_loadable((13, 0), (13, 0)).is_ok());
        assert!(ptx_loadable((12, 8), (13, 0)).is_ok());
        assert!(ptx_loadable((13, 0), (13, 2)).is_ok());
        let e = ptx_loadable((13, 1), (13, 0)).unwrap_err();
        assert!(e.contains("CUDA 13.1") && e.contains("CUDA 13.0"), "{e}");
        assert!(e.contains("nvidia-cuda-nvrtc==13.0.*"), "{e}");
        assert!(ptx_loadable((13, 0), (12, 9)).is_err());
    }
}
