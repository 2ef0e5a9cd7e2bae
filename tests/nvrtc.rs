//! Every kernel file compiles with NVRTC for sm_80 and sm_90, with no GPU:
//! only libnvrtc is needed (launch/test.sh installs the PyPI wheel
//! `nvidia-cuda-nvrtc` and puts it on LD_LIBRARY_PATH, naming the
//! directory in RINGTRAIN_NVRTC_LIB).
//!
//! A custom harness (Cargo.toml: `harness = false`) so that without NVRTC
//! the check reports itself *ignored* ("skipped: no NVRTC") in the line
//! libtest prints, never passed. With RINGTRAIN_NVRTC_LIB set, a missing
//! libnvrtc is a failure: the set-up promised one.

use ringtrain::backend::cuda::kernels::{self, SOURCES, Source};

mod libtest_args;

const ARCHES: [&str; 2] = ["compute_80", "compute_90"];

fn check_all() -> Result<usize, String> {
    let include = kernels::include_paths_from_env();
    let mut n = 0;
    for src in SOURCES {
        for arch in ARCHES {
            let ptx = kernels::compile(src, arch, &include)?;
            let target = format!(".target sm_{}", &arch["compute_".len()..]);
            if !ptx.contains(&target) {
                return Err(format!("{}: PTX for {arch} lacks {target:?}", src.file));
            }
            for k in src.kernels {
                if !ptx.contains(&format!(".entry {k}(")) {
                    return Err(format!("{}: PTX for {arch} has no entry {k}", src.file));
                }
            }
            n += 1;
        }
    }
    // A deliberately broken kernel must fail, with NVRTC's log.
    let broken = Source {
        file: "broken.cu",
        text: "extern \"C\" __global__ void k(float *x) { x[0] = undefined_name; }",
        kernels: &["k"],
    };
    match kernels::compile(&broken, ARCHES[0], &include) {
        Ok(_) => return Err("a broken kernel compiled".into()),
        Err(e) if e.contains("undefined_name") => {}
        Err(e) => return Err(format!("broken kernel: unexpected error {e}")),
    }
    Ok(n)
}

fn main() {
    let name = "nvrtc_compiles_every_kernel_for_sm80_and_sm90";
    // `cargo test -- --list`, filters and --skip, read like libtest.
    let selection = libtest_args::Selection::from_env();
    if selection.list {
        println!("{name}: test");
        return;
    }
    if !selection.selects(name) {
        println!(
            "\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out\n"
        );
        return;
    }
    println!("\nrunning 1 test");
    let promised = std::env::var_os("RINGTRAIN_NVRTC_LIB").is_some();
    if !kernels::nvrtc_present() {
        if promised {
            println!("test {name} ... FAILED");
            println!("RINGTRAIN_NVRTC_LIB is set but libnvrtc cannot be loaded (LD_LIBRARY_PATH?)");
            println!(
                "\ntest result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n"
            );
            std::process::exit(101);
        }
        println!("skipped: no NVRTC (set up by launch/test.sh: pip wheel nvidia-cuda-nvrtc)");
        println!("test {name} ... ignored");
        println!("\ntest result: ok. 0 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out\n");
        return;
    }
    let version = kernels::nvrtc_version().unwrap_or((0, 0));
    match check_all() {
        Ok(n) => {
            println!(
                "NVRTC {}.{}: {n} compilations ({} files x {:?}) ok; a broken kernel is rejected",
                version.0,
                version.1,
                SOURCES.len(),
                ARCHES
            );
            println!("test {name} ... ok");
            println!(
                "\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n"
            );
        }
        Err(e) => {
            println!("test {name} ... FAILED\n{e}");
            println!(
                "\ntest result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n"
            );
            std::process::exit(101);
        }
    }
}
