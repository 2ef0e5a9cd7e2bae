//! `ringtrain plot` through the real binary: a short real training run and
//! a real `bench allreduce --json` (one rank, no MPI: both builds), drawn
//! and decoded; and the user errors, which exit 2 and leave an existing
//! output untouched.

mod common;

use std::collections::HashSet;
use std::path::Path;

use common::{Run, single, tempdir};
use ringtrain::plot::color;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn plot(args: &[&str]) -> Run {
    let mut full = vec!["plot"];
    full.extend_from_slice(args);
    single(&full)
}

/// Width, height and the RGB pixels of a PNG file.
fn decode(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let file = std::fs::File::open(path).expect("open png");
    let mut r = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .expect("png header");
    let mut buf = vec![0; r.output_buffer_size().expect("buffer size")];
    let info = r.next_frame(&mut buf).expect("png data");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let px = buf[..info.buffer_size()]
        .chunks_exact(3)
        .map(|c| [c[0], c[1], c[2]])
        .collect();
    (info.width, info.height, px)
}

/// The image has the size asked, is far from blank, and shows the colours.
fn check_png(path: &Path, size: (u32, u32), colours: &[[u8; 3]]) {
    let (w, h, px) = decode(path);
    assert_eq!((w, h), size);
    let distinct: HashSet<[u8; 3]> = px.iter().copied().collect();
    assert!(distinct.len() >= 20, "only {} colours", distinct.len());
    let white = px.iter().filter(|p| **p == [255, 255, 255]).count();
    assert!(white < px.len() * 99 / 100, "almost all white");
    for c in colours {
        let n = px.iter().filter(|p| *p == c).count();
        assert!(n >= 50, "line colour {c:?} on only {n} pixels");
    }
}

/// A box of pixels: (left, top, right, bottom), inclusive.
type Bbox = (u32, u32, u32, u32);

fn bbox_of(w: u32, px: &[[u8; 3]], keep: impl Fn(u32, u32, [u8; 3]) -> bool) -> Option<Bbox> {
    let mut b: Option<Bbox> = None;
    for (i, p) in px.iter().enumerate() {
        let (x, y) = (i as u32 % w, i as u32 / w);
        if keep(x, y, *p) {
            b = Some(match b {
                None => (x, y, x, y),
                Some((l, t, r, bo)) => (l.min(x), t.min(y), r.max(x), bo.max(y)),
            });
        }
    }
    b
}

fn inside(b: Bbox, x: u32, y: u32) -> bool {
    (b.0..=b.2).contains(&x) && (b.1..=b.3).contains(&y)
}

/// The legend box (its frame's colour is drawn nowhere else) must not
/// overlap the bounding box of the plotted series' pixels (the series'
/// colours outside the legend box). Returns both boxes.
fn legend_clear_of_points(path: &Path, colours: &[[u8; 3]]) -> (Bbox, Bbox) {
    let (w, _, px) = decode(path);
    let b = ringtrain::plot::draw::LEGEND_BORDER;
    let legend = bbox_of(w, &px, |_, _, p| p == [b.0, b.1, b.2]).expect("a legend box");
    let points = bbox_of(w, &px, |x, y, p| {
        colours.contains(&p) && !inside(legend, x, y)
    })
    .expect("plotted points");
    let overlap = legend.0 <= points.2
        && points.0 <= legend.2
        && legend.1 <= points.3
        && points.1 <= legend.3;
    assert!(
        !overlap,
        "{}: legend box {legend:?} overlaps the points' bounding box {points:?}",
        path.display()
    );
    (legend, points)
}

fn rgb(i: usize) -> [u8; 3] {
    let c = color(i);
    [c.0, c.1, c.2]
}

#[test]
fn training_curves_of_a_real_run() {
    let tmp = tempdir("plot-train");
    let dir = tmp.path();
    let metrics = dir.join("run1.jsonl");
    single(&[
        "--bootstrap",
        "env",
        "train",
        "--steps",
        "30",
        "--global-batch",
        "64",
        "--hidden",
        "16",
        "--eval-every",
        "10",
        "--metrics-out",
        s(&metrics),
    ])
    .ok();
    let out = dir.join("curves.png");
    let r = plot(&[s(&metrics), "-o", s(&out)]);
    r.ok();
    assert!(r.stdout.contains("1200x800"), "{}", r.stdout);
    // Total loss in black, the three tasks (flag, shape, size) in the
    // first three palette colours.
    check_png(&out, (1200, 800), &[[0, 0, 0], rgb(0), rgb(1), rgb(2)]);
    legend_clear_of_points(&out, &[rgb(0), rgb(1), rgb(2)]);
    // Still laid out at 800x500, legend clear of the data.
    let mid = dir.join("mid.png");
    plot(&[
        s(&metrics),
        "-o",
        s(&mid),
        "--width",
        "800",
        "--height",
        "500",
    ])
    .ok();
    check_png(&mid, (800, 500), &[[0, 0, 0], rgb(0), rgb(1), rgb(2)]);
    legend_clear_of_points(&mid, &[rgb(0), rgb(1), rgb(2)]);

    let small = dir.join("small.png");
    plot(&[
        s(&metrics),
        "-o",
        s(&small),
        "--width",
        "640",
        "--height",
        "480",
        "--title",
        "my run",
    ])
    .ok();
    check_png(&small, (640, 480), &[rgb(0), rgb(1), rgb(2)]);
}

#[test]
fn busbw_of_bench_allreduce_json() {
    let tmp = tempdir("plot-allreduce");
    let dir = tmp.path();
    let r = single(&[
        "--bootstrap",
        "env",
        "bench",
        "allreduce",
        "-b",
        "1K",
        "-e",
        "1M",
        "-f",
        "4",
        "-n",
        "2",
        "-w",
        "1",
        "--json",
    ]);
    r.ok();
    // A real run (one rank: busbw 0), then two more runs appended as
    // another communicator would give them.
    let real = r.stdout.trim().to_string();
    let mut v: serde_json::Value = serde_json::from_str(&real).expect("bench json");
    let mut runs = vec![real];
    for (comm, scale) in [("ring", 2.0), ("mpi", 1.0)] {
        v["comm"] = comm.into();
        v["ranks"] = 2.into();
        for (i, row) in v["rows"]
            .as_array_mut()
            .expect("rows")
            .iter_mut()
            .enumerate()
        {
            row["in_place"]["busbw"] = (scale * (1.0 + i as f64)).into();
            row["out_of_place"]["busbw"] = (scale * (0.8 + i as f64)).into();
        }
        runs.push(v.to_string());
    }
    let input = dir.join("allreduce.json");
    std::fs::write(&input, runs.join("\n") + "\n").expect("write input");
    let out = dir.join("busbw.png");
    let r = plot(&[
        s(&input),
        "-o",
        s(&out),
        "--width",
        "900",
        "--height",
        "600",
    ]);
    r.ok();
    assert!(r.stdout.contains("all-reduce"), "{}", r.stdout);
    check_png(&out, (900, 600), &[rgb(0), rgb(1), rgb(2)]);
    legend_clear_of_points(&out, &[rgb(0), rgb(1), rgb(2)]);
    let mid = dir.join("busbw-800.png");
    plot(&[
        s(&input),
        "-o",
        s(&mid),
        "--width",
        "800",
        "--height",
        "500",
    ])
    .ok();
    legend_clear_of_points(&mid, &[rgb(0), rgb(1), rgb(2)]);
}

#[test]
fn bad_input_exits_2_and_keeps_the_old_output() {
    let tmp = tempdir("plot-errors");
    let dir = tmp.path();
    let good = dir.join("good.jsonl");
    std::fs::write(
        &good,
        "{\"type\":\"train\",\"step\":1,\"loss\":2.0,\"losses\":{\"a\":2.0}}\n\
         {\"type\":\"train\",\"step\":2,\"loss\":1.0,\"losses\":{\"a\":1.0}}\n",
    )
    .expect("write");
    let out = dir.join("out.png");
    plot(&[s(&good), "-o", s(&out)]).ok();
    let before = std::fs::read(&out).expect("first output");

    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    };
    let cases = [
        (dir.join("missing.jsonl"), "No such file"),
        (file("empty.jsonl", ""), "empty file"),
        (
            file(
                "bad.jsonl",
                "{\"type\":\"train\",\"step\":1,\"loss\":1}\n{\"type\":\"train\",\"st\n",
            ),
            "line 2: malformed JSON",
        ),
        (
            file(
                "unknown.jsonl",
                "{\"type\":\"train\",\"step\":1}\n{\"type\":\"config\"}\n",
            ),
            "line 2: unknown record type",
        ),
        (
            file("other.json", "{\"bench\":\"train\"}\n"),
            "only `bench allreduce --json`",
        ),
        (
            file("nothing.jsonl", "{\"type\":\"train\",\"step\":1}\n"),
            "no values to plot",
        ),
    ];
    for (input, want) in &cases {
        let r = plot(&[s(input), "-o", s(&out)]);
        assert_eq!(r.code, Some(2), "{input:?}: {r:?}");
        assert!(
            r.stderr.contains(want),
            "{input:?}: want {want:?} in {}",
            r.stderr
        );
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
    for (outp, want) in [
        (dir.join("no-such-dir").join("x.png"), "No such file"),
        (dir.join("out.jpg"), "ending in .png"),
    ] {
        let r = plot(&[s(&good), "-o", s(&outp)]);
        assert_eq!(r.code, Some(2), "{r:?}");
        assert!(r.stderr.contains(want), "want {want:?} in {}", r.stderr);
    }
    let r = plot(&[s(&good), "-o", s(&out), "--width", "5"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert_eq!(std::fs::read(&out).expect("output kept"), before);
    // No temp files left beside it.
    let names: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(
        !names.iter().any(|n| n.to_string_lossy().contains(".tmp")),
        "{names:?}"
    );
}

/// Under mpirun, the launcher's rank 0 alone draws: one line, one PNG.
#[cfg(feature = "mpi")]
#[test]
fn plot_under_mpirun_draws_once() {
    let tmp = tempdir("plot-mpirun");
    let dir = tmp.path();
    let input = dir.join("m.jsonl");
    std::fs::write(
        &input,
        "{\"type\":\"train\",\"step\":1,\"loss\":1.0,\"losses\":{\"a\":1.0}}\n\
         {\"type\":\"eval\",\"step\":1,\"tasks\":{\"a\":{\"loss\":0.5,\"accuracy\":0.7}}}\n",
    )
    .unwrap();
    let out = dir.join("m.png");
    let r = common::mpirun(3, &["plot", s(&input), "-o", s(&out)]);
    r.ok();
    assert_eq!(r.stdout.matches("wrote ").count(), 1, "{}", r.stdout);
    check_png(&out, (1200, 800), &[[0, 0, 0], rgb(0)]);
}
