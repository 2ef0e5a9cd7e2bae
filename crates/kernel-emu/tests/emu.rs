//! The emulator itself (scheduler, barriers, argument checks, thread-local
//! shared memory) and a first run of every kernel of kernels/*.cu.
//!
//! Inputs are small integers wherever a sum is checked, so every sum is
//! exact and independent of the order of additions.

use kernel_emu::{Arg, EmuError, kernel_names, launch};

fn ptr<T>(v: &[T]) -> Arg {
    Arg::Ptr(v.as_ptr() as u64)
}

fn ptr_mut<T>(v: &mut [T]) -> Arg {
    Arg::Ptr(v.as_mut_ptr() as u64)
}

/// Launches, panicking with the emulator's message on an error.
fn run(name: &str, grid: (u32, u32, u32), block: (u32, u32, u32), args: &[Arg]) {
    // SAFETY: every test passes buffers large enough for the launch.
    if let Err(e) = unsafe { launch(name, grid, block, args) } {
        panic!("{e}");
    }
}

/// Launches, expecting an error.
fn run_err(name: &str, grid: (u32, u32, u32), block: (u32, u32, u32), args: &[Arg]) -> EmuError {
    // SAFETY: as in `run`; most of these never start the kernel.
    match unsafe { launch(name, grid, block, args) } {
        Ok(()) => panic!("{name}: launch succeeded, expected an error"),
        Err(e) => e,
    }
}

/// f32 storage at a 16-byte aligned address (for the float4 paths).
#[derive(Clone, Copy, Default)]
#[repr(C, align(16))]
struct Quad([f32; 4]);

struct Aligned {
    q: Vec<Quad>,
    len: usize,
}

impl Aligned {
    fn new(v: &[f32]) -> Self {
        let mut q = vec![Quad::default(); v.len().div_ceil(4)];
        for (i, &x) in v.iter().enumerate() {
            q[i / 4].0[i % 4] = x;
        }
        Aligned { q, len: v.len() }
    }
    fn arg(&mut self) -> Arg {
        let a = Arg::Ptr(self.q.as_mut_ptr() as u64);
        assert_eq!(self.q.as_ptr() as u64 % 16, 0);
        a
    }
    fn to_vec(&self) -> Vec<f32> {
        self.q.iter().flat_map(|q| q.0).take(self.len).collect()
    }
}

fn close(a: f32, b: f64, rel: f64) -> bool {
    (a as f64 - b).abs() <= rel * (1.0 + b.abs())
}

#[test]
fn kernel_names_lists_every_kernel_of_kernels_dir() {
    let names = kernel_names();
    let want = [
        "bias_act_f32",
        "bias_act_f32_v4",
        "act_backward_f32",
        "act_backward_f32_v4",
        "f32_to_bf16",
        "bf16_to_f32",
        "count_nonfinite_f32",
        "softmax_ce_f32",
        "bce_logits_f32",
        "mse_f32",
        "sgd_update_f32",
        "adamw_update_f32",
        "sum_squares_partial_f32",
        "finish_sum_f32",
        "col_sum_f32",
        "col_sum_finish_f32",
        "scale_f32",
    ];
    // In file order (act, cast, check, loss, optim, reduce), then source
    // order; a kernel added later is listed too, without the self-tests.
    let listed: Vec<&str> = names.iter().copied().filter(|n| want.contains(n)).collect();
    assert_eq!(listed, want);
    assert!(
        !names.iter().any(|n| n.starts_with("emu_selftest_")),
        "{names:?}"
    );
}

#[test]
fn finish_sum_known_answer() {
    // 1000 partials > 256 threads: each thread adds several, then the
    // tree sum over the block (8 barriers).
    let partial: Vec<f32> = (0..1000).map(|i| i as f32).collect();
    let mut stats = vec![7.0f32, 9.0, -3.0];
    let args = |stats: &mut [f32], n: i32, stat: i32, acc: i32| {
        vec![
            Arg::I32(n),
            ptr(&partial),
            ptr_mut(stats),
            Arg::I32(stat),
            Arg::I32(acc),
        ]
    };
    run(
        "finish_sum_f32",
        (1, 1, 1),
        (256, 1, 1),
        &args(&mut stats, 1000, 1, 0),
    );
    assert_eq!(stats, [7.0, 499_500.0, -3.0]);
    run(
        "finish_sum_f32",
        (1, 1, 1),
        (256, 1, 1),
        &args(&mut stats, 1000, 1, 1),
    );
    assert_eq!(stats, [7.0, 999_000.0, -3.0]);
    run(
        "finish_sum_f32",
        (1, 1, 1),
        (256, 1, 1),
        &args(&mut stats, 10, 0, 1),
    );
    assert_eq!(stats, [52.0, 999_000.0, -3.0]);
    run(
        "finish_sum_f32",
        (1, 1, 1),
        (256, 1, 1),
        &args(&mut stats, 0, 2, 0),
    );
    assert_eq!(stats, [52.0, 999_000.0, 0.0]);
}

/// partial[b] as the kernel defines it: block b takes (float4 or float)
/// items b*256 + t, + grid*256, ...
fn sum_squares_expected(x: &[f32], grid: usize, v4: bool) -> Vec<f32> {
    let w = if v4 { 4 } else { 1 };
    let items = x.len() / w;
    let mut out = vec![0.0f32; grid];
    for (b, o) in out.iter_mut().enumerate() {
        for t in 0..256 {
            let mut i = b * 256 + t;
            while i < items {
                for v in &x[i * w..i * w + w] {
                    *o += v * v;
                }
                i += grid * 256;
            }
        }
    }
    out
}

#[test]
fn sum_squares_partial_over_several_blocks() {
    let grid = 3;
    let n = 5000; // > 3 * 256 float4s: grid-stride in both paths
    let x: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
    let total: f32 = x.iter().map(|v| v * v).sum();

    // float4 path: n % 4 == 0 and 16-byte aligned.
    let mut xa = Aligned::new(&x);
    let mut partial = vec![f32::NAN; grid + 1];
    let args = [Arg::I64(n as i64), xa.arg(), ptr_mut(&mut partial)];
    run(
        "sum_squares_partial_f32",
        (grid as u32, 1, 1),
        (256, 1, 1),
        &args,
    );
    assert_eq!(partial[..grid], sum_squares_expected(&x, grid, true)[..]);
    assert!(partial[grid].is_nan(), "wrote past the grid's partials");
    assert_eq!(partial[..grid].iter().sum::<f32>(), total);

    // Scalar path: the same data one float off 16-byte alignment.
    let mut shifted = vec![0.0f32];
    shifted.extend_from_slice(&x);
    let mut xs = Aligned::new(&shifted);
    let Arg::Ptr(base) = xs.arg() else {
        unreachable!()
    };
    let mut partial = vec![f32::NAN; grid];
    let args = [
        Arg::I64(n as i64),
        Arg::Ptr(base + 4),
        ptr_mut(&mut partial),
    ];
    run(
        "sum_squares_partial_f32",
        (grid as u32, 1, 1),
        (256, 1, 1),
        &args,
    );
    assert_eq!(partial, sum_squares_expected(&x, grid, false));

    // Scalar path: n % 4 != 0.
    let x = &x[..n - 1];
    let mut partial = vec![f32::NAN; grid];
    let args = [Arg::I64(x.len() as i64), ptr(x), ptr_mut(&mut partial)];
    run(
        "sum_squares_partial_f32",
        (grid as u32, 1, 1),
        (256, 1, 1),
        &args,
    );
    assert_eq!(partial, sum_squares_expected(x, grid, false));
}

#[test]
fn col_sum_with_a_32_by_8_block() {
    let (rows, cols) = (37usize, 70usize);
    let x: Vec<f32> = (0..rows * cols)
        .map(|i| ((i / cols * 3 + i % cols) % 11) as f32 - 5.0)
        .collect();
    let sums: Vec<f32> = (0..cols)
        .map(|c| (0..rows).map(|r| x[r * cols + c]).sum())
        .collect();
    let mut partial = vec![f32::NAN; 1];
    // beta == 0 overwrites, even a NaN; out[cols] is past the end.
    let mut out = vec![f32::NAN; cols + 1];
    let args = |partial: &mut [f32], out: &mut [f32], per_slice: usize, beta: f32| {
        [
            Arg::I64(rows as i64),
            Arg::I64(cols as i64),
            Arg::I64(per_slice as i64),
            ptr(&x),
            ptr_mut(partial),
            ptr_mut(out),
            Arg::F32(beta),
        ]
    };
    // One slice of every row: the sums go straight to out.
    let grid = (cols.div_ceil(32) as u32, 1, 1);
    run(
        "col_sum_f32",
        grid,
        (32, 8, 1),
        &args(&mut partial, &mut out, rows, 0.0),
    );
    assert_eq!(out[..cols], sums[..]);
    assert!(out[cols].is_nan());
    assert!(partial[0].is_nan(), "one slice wrote the partials");
    run(
        "col_sum_f32",
        grid,
        (32, 8, 1),
        &args(&mut partial, &mut out, rows, 0.5),
    );
    let want: Vec<f32> = sums.iter().map(|s| 0.5 * s + s).collect();
    assert_eq!(out[..cols], want[..]);

    // Slices of 10 rows (the last one 7): per-slice sums into partial,
    // out untouched, then col_sum_finish_f32 adds them up.
    let (per, slices) = (10usize, 4usize);
    let mut partial = vec![f32::NAN; slices * cols + 1];
    let mut out = vec![f32::NAN; cols + 1];
    let grid = (cols.div_ceil(32) as u32, slices as u32, 1);
    run(
        "col_sum_f32",
        grid,
        (32, 8, 1),
        &args(&mut partial, &mut out, per, 0.0),
    );
    for s in 0..slices {
        for c in 0..cols {
            let want: f32 = (s * per..rows.min((s + 1) * per))
                .map(|r| x[r * cols + c])
                .sum();
            assert_eq!(partial[s * cols + c], want, "slice {s} column {c}");
        }
    }
    assert!(partial[slices * cols].is_nan() && out.iter().all(|v| v.is_nan()));
    let finish = |partial: &[f32], out: &mut [f32], beta: f32| {
        [
            Arg::I64(cols as i64),
            Arg::I32(slices as i32),
            ptr(partial),
            ptr_mut(out),
            Arg::F32(beta),
        ]
    };
    run(
        "col_sum_finish_f32",
        (1, 1, 1),
        (32, 1, 1),
        &finish(&partial, &mut out, 0.0),
    );
    assert_eq!(out[..cols], sums[..]);
    assert!(out[cols].is_nan());
    run(
        "col_sum_finish_f32",
        (2, 1, 1),
        (16, 1, 1),
        &finish(&partial, &mut out, 0.5),
    );
    assert_eq!(out[..cols], want[..]);
}

#[test]
fn argument_errors_are_reported() {
    let x = vec![0.0f32; 4];
    let mut p = vec![0.0f32; 1];

    let e = run_err("no_such_kernel", (1, 1, 1), (1, 1, 1), &[]);
    assert_eq!(
        e,
        EmuError::UnknownKernel {
            kernel: "no_such_kernel".into()
        }
    );
    assert!(
        e.to_string().contains("unknown kernel `no_such_kernel`"),
        "{e}"
    );

    let e = run_err(
        "sum_squares_partial_f32",
        (1, 1, 1),
        (256, 1, 1),
        &[Arg::I64(4), ptr(&x)],
    );
    assert_eq!(
        e,
        EmuError::ArgCount {
            kernel: "sum_squares_partial_f32".into(),
            expected: 3,
            got: 2
        }
    );
    let msg = e.to_string();
    assert!(
        msg.contains("sum_squares_partial_f32") && msg.contains("expected 3, got 2"),
        "{msg}"
    );

    // An i32 where the kernel takes long long: on a GPU, 4 of the 8 bytes.
    let e = run_err(
        "sum_squares_partial_f32",
        (1, 1, 1),
        (256, 1, 1),
        &[Arg::I32(4), ptr(&x), ptr_mut(&mut p)],
    );
    assert_eq!(
        e,
        EmuError::ArgType {
            kernel: "sum_squares_partial_f32".into(),
            index: 0,
            c_type: "long long".into(),
            given: Arg::I32(4)
        }
    );
    let msg = e.to_string();
    assert!(
        msg.contains("argument 0 is I32(4)")
            && msg.contains("`long long`")
            && msg.contains("Arg::I64"),
        "{msg}"
    );

    // A float where the kernel takes a pointer, and the other way round.
    let e = run_err(
        "scale_f32",
        (1, 1, 1),
        (256, 1, 1),
        &[Arg::I64(1), Arg::F32(1.0), Arg::F32(2.0)],
    );
    match &e {
        EmuError::ArgType {
            index: 1, c_type, ..
        } if c_type == "float *" => {}
        _ => panic!("{e:?}"),
    }
    let e = run_err(
        "scale_f32",
        (1, 1, 1),
        (256, 1, 1),
        &[Arg::I64(1), ptr_mut(&mut p), Arg::Ptr(0)],
    );
    match &e {
        EmuError::ArgType {
            index: 2, c_type, ..
        } if c_type == "float" => {}
        _ => panic!("{e:?}"),
    }
    let e = run_err(
        "sum_squares_partial_f32",
        (1, 1, 1),
        (256, 1, 1),
        &[Arg::I64(4), Arg::I64(0), ptr_mut(&mut p)],
    );
    match &e {
        EmuError::ArgType {
            index: 1, c_type, ..
        } if c_type == "const float *" => {}
        _ => panic!("{e:?}"),
    }
    // An i64 where the kernel takes int (finish_sum_f32's n).
    let e = run_err(
        "finish_sum_f32",
        (1, 1, 1),
        (256, 1, 1),
        &[
            Arg::I64(1),
            ptr(&x),
            ptr_mut(&mut p),
            Arg::I32(0),
            Arg::I32(0),
        ],
    );
    match &e {
        EmuError::ArgType {
            index: 0, c_type, ..
        } if c_type == "int" => {}
        _ => panic!("{e:?}"),
    }
    assert_eq!(p, [0.0], "a rejected launch ran");
}

#[test]
fn arguments_arrive_bit_exact() {
    let mut out = vec![0u64; 6];
    let f = [1.0f32];
    let args = [
        Arg::I32(-5),
        Arg::I32(-1), // unsigned int 0xffffffff
        Arg::I64(-(1 << 40)),
        Arg::I64(-1), // unsigned long long max
        Arg::F32(-0.0),
        ptr(&f),
        ptr_mut(&mut out),
    ];
    run("emu_selftest_args", (2, 1, 1), (3, 1, 1), &args);
    assert_eq!(
        out,
        [
            -5i64 as u64,
            0xffff_ffff,
            -(1i64 << 40) as u64,
            u64::MAX,
            0x8000_0000,
            f.as_ptr() as u64
        ]
    );
    // A null pointer is Ptr(0).
    let args = [
        Arg::I32(0),
        Arg::I32(0),
        Arg::I64(0),
        Arg::I64(0),
        Arg::F32(f32::from_bits(0x7fc0_0001)),
        Arg::Ptr(0),
        ptr_mut(&mut out),
    ];
    run("emu_selftest_args", (1, 1, 1), (1, 1, 1), &args);
    assert_eq!(out, [0, 0, 0, 0, 0x7fc0_0001, 0]);
}

#[test]
fn bad_launch_dimensions_run_nothing() {
    let mut x = vec![1.0f32; 4];
    for (grid, block, what) in [
        ((1, 1, 1), (1025, 1, 1), "at most"),
        ((1, 1, 1), (32, 32, 2), "2048 threads"),
        ((1, 1, 1), (1, 1, 65), "z at most 64"),
        ((0, 1, 1), (256, 1, 1), "at least 1"),
        ((1, 1, 1), (256, 0, 1), "at least 1"),
        ((1, 65536, 1), (256, 1, 1), "65535"),
    ] {
        let e = run_err(
            "scale_f32",
            grid,
            block,
            &[Arg::I64(4), ptr_mut(&mut x), Arg::F32(2.0)],
        );
        match &e {
            EmuError::BadDims { kernel, message }
                if kernel == "scale_f32" && message.contains(what) => {}
            _ => panic!("{grid:?} {block:?}: {e:?}"),
        }
    }
    assert_eq!(x, [1.0; 4]);
    // The largest block is fine.
    run(
        "scale_f32",
        (1, 1, 1),
        (1024, 1, 1),
        &[Arg::I64(4), ptr_mut(&mut x), Arg::F32(2.0)],
    );
    assert_eq!(x, [2.0; 4]);
}

#[test]
fn barrier_divergence_is_an_error() {
    let mut x = vec![0i32; 64];
    let e = run_err(
        "emu_selftest_diverge",
        (1, 1, 1),
        (64, 1, 1),
        &[ptr_mut(&mut x)],
    );
    match &e {
        EmuError::BarrierDivergence { kernel, message }
            if kernel == "emu_selftest_diverge"
                && message.contains("block (0, 0, 0)")
                && message.contains("63 of 64 threads wait")
                && message.contains("1 have returned (first: thread (0, 0, 0))") => {}
        _ => panic!("{e:?}"),
    }
    assert!(e.to_string().contains("barrier divergence"), "{e}");
    assert_eq!(x, [0; 64], "threads went on past a divergent barrier");
    // The emulator is usable again afterwards, on the same OS thread.
    let partial = [1.0f32, 2.0];
    let mut stats = [0.0f32];
    run(
        "finish_sum_f32",
        (1, 1, 1),
        (256, 1, 1),
        &[
            Arg::I32(2),
            ptr(&partial),
            ptr_mut(&mut stats),
            Arg::I32(0),
            Arg::I32(0),
        ],
    );
    assert_eq!(stats, [3.0]);
}

#[test]
fn blocks_in_grid_order_threads_in_index_order() {
    let (grid, block) = ((2u32, 3u32, 2u32), (4u32, 2u32, 2u32));
    let nb = grid.0 * grid.1 * grid.2;
    let nt = block.0 * block.1 * block.2;
    let mut log = vec![0u32; 1 + 2 * (nb * nt) as usize];
    run("emu_selftest_order", grid, block, &[ptr_mut(&mut log)]);
    let mut want = vec![2 * nb * nt];
    for b in 0..nb {
        // Linear block index x + gx (y + gy z): z, then y, then x order.
        want.extend((0..nt).map(|t| b * nt + t));
        want.extend((0..nt).map(|t| 0x8000_0000 | (b * nt + t)));
    }
    assert_eq!(log, want);
}

#[test]
fn shared_memory_across_many_barriers_and_the_largest_block() {
    for (blocks, n) in [(3usize, 1024usize), (2, 96)] {
        let input: Vec<i32> = (0..(blocks * n) as i32).collect();
        for k in [0, 1, 2, 5] {
            let mut out = vec![-1i32; blocks * n];
            run(
                "emu_selftest_rotate",
                (blocks as u32, 1, 1),
                (n as u32, 1, 1),
                &[Arg::I32(k), ptr(&input), ptr_mut(&mut out)],
            );
            let want: Vec<i32> = (0..blocks * n)
                .map(|i| {
                    let (b, t) = (i / n, i % n);
                    let src = if k % 2 == 1 { n - 1 - t } else { t };
                    input[b * n + src]
                })
                .collect();
            assert_eq!(out, want, "blocks {blocks}, n {n}, k {k}");
        }
    }
}

#[test]
fn count_nonfinite_counts_with_atomics() {
    let n = 3000usize;
    let mut x: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 700.0).collect();
    let bad = [0usize, 1, 255, 256, 257, 1023, 1024, 2047, 2999];
    for (j, &i) in bad.iter().enumerate() {
        x[i] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][j % 3];
    }
    x[100] = f32::MAX;
    x[101] = f32::MIN_POSITIVE / 2.0; // subnormal: finite
    x[102] = -0.0;
    let mut count = vec![5u32, 77];
    // 4 blocks of 256 < 3000: grid-stride.
    run(
        "count_nonfinite_f32",
        (4, 1, 1),
        (256, 1, 1),
        &[Arg::I64(n as i64), ptr(&x), ptr_mut(&mut count)],
    );
    assert_eq!(count, [5 + bad.len() as u32, 77]);
    // n == 0 adds nothing.
    run(
        "count_nonfinite_f32",
        (1, 1, 1),
        (256, 1, 1),
        &[Arg::I64(0), ptr(&x), ptr_mut(&mut count)],
    );
    assert_eq!(count[0], 5 + bad.len() as u32);
}

#[test]
fn bf16_round_to_nearest_even() {
    // (f32 bits, bf16 bits)
    let cases: [(u32, u16); 18] = [
        (0x3f80_0000, 0x3f80), // 1.0
        (0x3f80_7fff, 0x3f80), // below half: down
        (0x3f80_8000, 0x3f80), // tie, even: down
        (0x3f81_8000, 0x3f82), // tie, odd: up
        (0x3f80_8001, 0x3f81), // above half: up
        (0xbf81_8000, 0xbf82), // negative tie, odd: away from zero
        (0xbf80_8000, 0xbf80), // negative tie, even
        (0x0000_0000, 0x0000), // +0
        (0x8000_0000, 0x8000), // -0
        (0x0000_8000, 0x0000), // subnormal tie, even
        (0x0001_8000, 0x0002), // subnormal tie, odd
        (0x7f7f_ffff, 0x7f80), // max finite rounds to +inf
        (0xff7f_ffff, 0xff80), // and to -inf
        (0x7f80_0000, 0x7f80), // +inf
        (0xff80_0000, 0xff80), // -inf
        (0x7fc0_0000, 0x7fc0), // quiet NaN
        (0x7f80_0001, 0x7fc0), // signalling NaN, payload only in the low bits: stays NaN
        (0xffa0_0000, 0xffe0), // negative NaN, quieted
    ];
    let x: Vec<f32> = cases.iter().map(|&(b, _)| f32::from_bits(b)).collect();
    let mut y = vec![0xdeadu16; x.len() + 1];
    run(
        "f32_to_bf16",
        (1, 1, 1),
        (256, 1, 1),
        &[Arg::I64(x.len() as i64), ptr(&x), ptr_mut(&mut y)],
    );
    for (i, &(b, want)) in cases.iter().enumerate() {
        assert_eq!(
            y[i], want,
            "f32 {b:#010x}: bf16 {:#06x}, want {want:#06x}",
            y[i]
        );
    }
    assert_eq!(y[x.len()], 0xdead);

    let h: Vec<u16> = vec![0x3f80, 0xff80, 0x0001, 0x7fc1, 0x8000, 0x4049];
    let mut f = vec![0.0f32; h.len()];
    run(
        "bf16_to_f32",
        (1, 1, 1),
        (256, 1, 1),
        &[Arg::I64(h.len() as i64), ptr(&h), ptr_mut(&mut f)],
    );
    let bits: Vec<u32> = f.iter().map(|v| v.to_bits()).collect();
    assert_eq!(
        bits,
        [
            0x3f80_0000,
            0xff80_0000,
            0x0001_0000,
            0x7fc1_0000,
            0x8000_0000,
            0x4049_0000
        ]
    );
}

#[test]
fn launches_from_several_os_threads_at_once() {
    // Shared memory is per OS thread: concurrent launches must not see
    // each other's. Each thread checks its own exact answers many times.
    let handles: Vec<_> = (0..4)
        .map(|id: i32| {
            std::thread::spawn(move || {
                for it in 0..25 {
                    let n = 300 + 37 * id + it;
                    let partial: Vec<f32> = (0..n).map(|i| (i % 13 + id) as f32).collect();
                    let want: f32 = partial.iter().sum();
                    let mut stats = [0.0f32; 2];
                    run(
                        "finish_sum_f32",
                        (1, 1, 1),
                        (256, 1, 1),
                        &[
                            Arg::I32(n),
                            ptr(&partial),
                            ptr_mut(&mut stats),
                            Arg::I32(1),
                            Arg::I32(0),
                        ],
                    );
                    assert_eq!(stats, [0.0, want], "thread {id}, iteration {it}");

                    let len = 128usize;
                    let input: Vec<i32> = (0..len as i32).map(|i| i + 1000 * id).collect();
                    let mut out = vec![0i32; len];
                    run(
                        "emu_selftest_rotate",
                        (1, 1, 1),
                        (len as u32, 1, 1),
                        &[Arg::I32(3), ptr(&input), ptr_mut(&mut out)],
                    );
                    let want: Vec<i32> = input.iter().rev().copied().collect();
                    assert_eq!(out, want, "thread {id}, iteration {it}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

// ---- A first run of the remaining kernels, against the formulas of their
// comments (src/backend/cpu.rs is the full reference; the backend's own
// tests compare against it).

fn gelu(z: f64) -> f64 {
    let c = 0.797_884_560_802_865_4;
    0.5 * z * (1.0 + (c * (z + 0.044715 * z * z * z)).tanh())
}

#[test]
fn bias_act_scalar_and_float4_agree_with_the_formulas() {
    let (rows, cols) = (5usize, 12usize);
    let z0: Vec<f32> = (0..rows * cols).map(|i| (i as f32 - 30.0) * 0.1).collect();
    let bias: Vec<f32> = (0..cols).map(|c| c as f32 * 0.05 - 0.2).collect();
    for act in [-1, 0, 1, 2] {
        let mut z = z0.clone();
        let mut h = vec![f32::NAN; rows * cols];
        let hp = if act >= 0 {
            ptr_mut(&mut h)
        } else {
            Arg::Ptr(0)
        };
        let args = [
            Arg::I32(act),
            Arg::I64(rows as i64),
            Arg::I64(cols as i64),
            ptr(&bias),
            ptr_mut(&mut z),
            hp,
        ];
        run("bias_act_f32", (2, 1, 1), (16, 1, 1), &args);

        let mut z4 = Aligned::new(&z0);
        let mut h4 = Aligned::new(&vec![f32::NAN; rows * cols]);
        let mut b4 = Aligned::new(&bias);
        let h4p = if act >= 0 { h4.arg() } else { Arg::Ptr(0) };
        let args = [
            Arg::I32(act),
            Arg::I64(rows as i64),
            Arg::I64(cols as i64),
            b4.arg(),
            z4.arg(),
            h4p,
        ];
        run("bias_act_f32_v4", (2, 1, 1), (4, 1, 1), &args);
        assert_eq!(z4.to_vec(), z, "act {act}");
        let h4v = h4.to_vec();
        for i in 0..rows * cols {
            let v = z0[i] + bias[i % cols];
            assert_eq!(z[i], v);
            if act < 0 {
                assert!(
                    h[i].is_nan() && h4v[i].is_nan(),
                    "h written with no activation"
                );
                continue;
            }
            let v = v as f64;
            let want = match act {
                0 => v.max(0.0),
                1 => gelu(v),
                _ => v.tanh(),
            };
            assert!(
                close(h[i], want, 1e-6),
                "act {act} z {v}: {} vs {want}",
                h[i]
            );
            assert_eq!(h4v[i].to_bits(), h[i].to_bits(), "act {act}: v4 differs");
        }
    }
}

#[test]
fn act_backward_scalar_and_float4_agree() {
    let n = 24usize;
    let z: Vec<f32> = (0..n).map(|i| (i as f32 - 12.0) * 0.3).collect();
    let dh0: Vec<f32> = (0..n).map(|i| 1.0 + i as f32 * 0.01).collect();
    for act in [0, 1, 2] {
        let h: Vec<f32> = z
            .iter()
            .map(|&v| match act {
                0 => v.max(0.0),
                1 => gelu(v as f64) as f32,
                _ => v.tanh(),
            })
            .collect();
        let mut dh = dh0.clone();
        let args = [
            Arg::I32(act),
            Arg::I64(n as i64),
            ptr(&z),
            ptr(&h),
            ptr_mut(&mut dh),
        ];
        run("act_backward_f32", (1, 1, 1), (8, 1, 1), &args);
        let (mut z4, mut hh4, mut d4) = (Aligned::new(&z), Aligned::new(&h), Aligned::new(&dh0));
        let args = [
            Arg::I32(act),
            Arg::I64(n as i64),
            z4.arg(),
            hh4.arg(),
            d4.arg(),
        ];
        run("act_backward_f32_v4", (1, 1, 1), (2, 1, 1), &args);
        let d4 = d4.to_vec();
        for i in 0..n {
            let (zi, hi) = (z[i] as f64, h[i] as f64);
            let g = match act {
                0 => f64::from(u8::from(zi > 0.0)),
                1 => (gelu(zi + 1e-6) - gelu(zi - 1e-6)) / 2e-6,
                _ => 1.0 - hi * hi,
            };
            assert!(
                close(dh[i], dh0[i] as f64 * g, 1e-4),
                "act {act} z {zi}: {} vs {}",
                dh[i],
                dh0[i] as f64 * g
            );
            assert_eq!(d4[i].to_bits(), dh[i].to_bits(), "act {act}: v4 differs");
        }
    }
}

/// The loss kernels' common arguments after the kind-specific ones.
struct LossBufs {
    out: Vec<f32>,
    labels: Vec<f32>,
    dout: Vec<f32>,
    partial: Vec<f32>,
}

#[test]
fn loss_kernels_match_the_formulas() {
    // Two tasks side by side in `out` (cols 0..1: other, 1..4: ours) and
    // in `labels` (col 0: other, col 1..: ours); some labels missing.
    let rows = 300usize; // > 256: two blocks, and grid-stride on one
    let (oc, oo, lc, lo) = (5usize, 1usize, 4usize, 1usize);
    let scale = 0.25f32;
    let mk = |labels: Vec<f32>| LossBufs {
        out: (0..rows * oc)
            .map(|i| ((i * 7) % 13) as f32 * 0.3 - 1.8)
            .collect(),
        labels,
        dout: vec![9.0; rows * oc],
        partial: vec![f32::NAN; 3],
    };
    let launch_loss = |name: &str, kind: &[Arg], b: &mut LossBufs, grid: u32| {
        let mut args = vec![Arg::I64(rows as i64)];
        args.extend_from_slice(kind);
        args.extend([
            ptr(&b.out),
            Arg::I64(oc as i64),
            Arg::I64(oo as i64),
            ptr(&b.labels),
            Arg::I64(lc as i64),
            Arg::I64(lo as i64),
            Arg::F32(scale),
            ptr_mut(&mut b.dout),
            ptr_mut(&mut b.partial),
        ]);
        run(name, (grid, 1, 1), (256, 1, 1), &args);
    };
    let missing = |r: usize| r % 10 == 3;

    // Softmax cross-entropy, 3 classes.
    let labels: Vec<f32> = (0..rows * lc)
        .map(|i| {
            if missing(i / lc) {
                f32::NAN
            } else {
                ((i / lc) % 3) as f32
            }
        })
        .collect();
    for grid in [1, 2] {
        let mut b = mk(labels.clone());
        launch_loss("softmax_ce_f32", &[Arg::I32(3)], &mut b, grid);
        let mut total = 0.0f64;
        for r in 0..rows {
            let o: Vec<f64> = (0..3).map(|j| b.out[r * oc + oo + j] as f64).collect();
            let d = &b.dout[r * oc + oo..r * oc + oo + 3];
            assert_eq!(b.dout[r * oc], 9.0, "other task's column written");
            if missing(r) {
                assert_eq!(d, [0.0; 3]);
                continue;
            }
            let c = r % 3;
            let mx = o.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = o.iter().map(|v| (v - mx).exp()).sum();
            total += s.ln() + mx - o[c];
            for j in 0..3 {
                let want = ((o[j] - mx).exp() / s - f64::from(u8::from(j == c))) * scale as f64;
                assert!(
                    close(d[j], want, 1e-5),
                    "row {r} class {j}: {} vs {want}",
                    d[j]
                );
            }
        }
        let got: f32 = b.partial[..grid as usize].iter().sum();
        assert!(close(got, total, 1e-5), "softmax loss {got} vs {total}");
    }

    // Binary cross-entropy with logits.
    let labels: Vec<f32> = (0..rows * lc)
        .map(|i| {
            if missing(i / lc) {
                f32::NAN
            } else {
                ((i / lc) % 2) as f32
            }
        })
        .collect();
    let mut b = mk(labels);
    launch_loss("bce_logits_f32", &[], &mut b, 2);
    let mut total = 0.0f64;
    for r in 0..rows {
        let x = b.out[r * oc + oo] as f64;
        let d = b.dout[r * oc + oo];
        if missing(r) {
            assert_eq!(d, 0.0);
            continue;
        }
        let y = (r % 2) as f64;
        let sig = 1.0 / (1.0 + (-x).exp());
        total += -(y * sig.ln() + (1.0 - y) * (1.0 - sig).ln());
        assert!(close(d, (sig - y) * scale as f64, 1e-6), "row {r}");
    }
    let got: f32 = b.partial[..2].iter().sum();
    assert!(close(got, total, 1e-5), "bce loss {got} vs {total}");

    // Squared error over 3 columns, masked per column.
    let labels: Vec<f32> = (0..rows * lc)
        .map(|i| {
            if i % 7 == 2 {
                f32::NAN
            } else {
                (i % 5) as f32 * 0.5
            }
        })
        .collect();
    let mut b = mk(labels);
    launch_loss("mse_f32", &[Arg::I32(3)], &mut b, 2);
    let mut total = 0.0f64;
    for r in 0..rows {
        for j in 0..3 {
            let y = b.labels[r * lc + lo + j];
            let o = b.out[r * oc + oo + j];
            let d = b.dout[r * oc + oo + j];
            if y.is_nan() {
                assert_eq!(d, 0.0);
            } else {
                let e = (o - y) as f64;
                total += e * e;
                assert!(close(d, 2.0 * e * scale as f64, 1e-6));
            }
        }
    }
    let got: f32 = b.partial[..2].iter().sum();
    assert!(close(got, total, 1e-5), "mse loss {got} vs {total}");
}

#[test]
fn optimizer_and_scale_kernels_match_the_formulas() {
    let n = 1000usize;
    let p0: Vec<f32> = (0..n).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
    let g: Vec<f32> = (0..n).map(|i| (i % 11) as f32 * 0.02 - 0.1).collect();
    let v0: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.01).collect();
    // stats[1] = |g|² = 16: clip 2 scales by 0.5.
    let stats = [0.0f32, 16.0];
    let (lr, wd, mu) = (0.1f32, 0.01f32, 0.9f32);
    for (clip, c) in [(2.0f32, 0.5f32), (0.0, 1.0), (10.0, 1.0)] {
        for first in [0, 1] {
            let (mut p, mut v) = (p0.clone(), v0.clone());
            let args = [
                Arg::I64(n as i64),
                ptr_mut(&mut p),
                ptr(&g),
                ptr_mut(&mut v),
                ptr(&stats),
                Arg::I32(1),
                Arg::F32(clip),
                Arg::F32(lr),
                Arg::F32(wd),
                Arg::F32(mu),
                Arg::I32(first),
            ];
            run("sgd_update_f32", (2, 1, 1), (256, 1, 1), &args);
            for i in 0..n {
                let gi = g[i] * c + wd * p0[i];
                let vi = if first != 0 { gi } else { mu * v0[i] + gi };
                assert_eq!(v[i], vi, "sgd v, clip {clip} first {first}");
                assert_eq!(p[i], p0[i] - lr * vi, "sgd p, clip {clip} first {first}");
            }
        }
    }

    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let (bc1, bc2) = (1.0 - b1.powi(3), 1.0 - b2.powi(3));
    let mut p = p0.clone();
    let mut m = v0.clone();
    let mut v = v0.clone();
    let args = [
        Arg::I64(n as i64),
        ptr_mut(&mut p),
        ptr(&g),
        ptr_mut(&mut m),
        ptr_mut(&mut v),
        ptr(&stats),
        Arg::I32(1),
        Arg::F32(2.0),
        Arg::F32(lr),
        Arg::F32(wd),
        Arg::F32(b1),
        Arg::F32(b2),
        Arg::F32(eps),
        Arg::F32(bc1),
        Arg::F32(bc2),
    ];
    run("adamw_update_f32", (3, 1, 1), (256, 1, 1), &args);
    for i in 0..n {
        let gi = g[i] * 0.5;
        let pi = p0[i] - lr * wd * p0[i];
        let mi = b1 * v0[i] + (1.0 - b1) * gi;
        let vi = b2 * v0[i] + (1.0 - b2) * gi * gi;
        assert_eq!((m[i], v[i]), (mi, vi), "adamw m, v at {i}");
        let want = pi - lr * (mi / bc1) / ((vi / bc2).sqrt() + eps);
        assert_eq!(p[i], want, "adamw p at {i}");
    }

    let mut x = p0.clone();
    run(
        "scale_f32",
        (2, 1, 1),
        (256, 1, 1),
        &[Arg::I64(n as i64 - 1), ptr_mut(&mut x), Arg::F32(-3.0)],
    );
    for i in 0..n - 1 {
        assert_eq!(x[i], p0[i] * -3.0);
    }
    assert_eq!(x[n - 1], p0[n - 1], "scale_f32 wrote past n");
}
