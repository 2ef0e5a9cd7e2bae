//! Reading and writing `.npy` files, and NumPy interop when it is there.

use super::header::{ALIGN, MAGIC};
use super::*;

use crate::data::test_util::{TempDir, temp_dir};

/// A hand-made file: header dict `dict` in format `major`, then `data`.
fn handmade(major: u8, dict: &str, data: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&[major, 0]);
    if major == 1 {
        out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(dict.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.extend_from_slice(data);
    out
}

fn open_bytes(dir: &TempDir, name: &str, bytes: &[u8]) -> Result<NpyArray> {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    NpyArray::open(path)
}

fn read_all(a: &NpyArray) -> Vec<f32> {
    let mut out = vec![0.0; a.rows() * a.row_width()];
    for (i, row) in out.chunks_mut(a.row_width()).enumerate() {
        a.read_row_f32(i, row).unwrap();
    }
    out
}

#[test]
fn roundtrip_f32() {
    let dir = temp_dir("npy-f32");
    let path = dir.path().join("x.npy");
    let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
    write_f32(&path, &[3, 4], &data).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(parse_header(&bytes).unwrap().data_offset % ALIGN, 0);
    let a = NpyArray::open(&path).unwrap();
    assert_eq!(
        (a.dtype(), a.shape(), a.rows(), a.row_width()),
        (Dtype::F32, &[3usize, 4][..], 3, 4)
    );
    assert_eq!(read_all(&a), data);
    // Rewriting replaces the file in place.
    write_f32(&path, &[2], &[f32::NAN, 1.0]).unwrap();
    let b = NpyArray::open(&path).unwrap();
    let v = read_all(&b);
    assert!(v[0].is_nan() && v[1] == 1.0 && b.row_width() == 1);
    assert_eq!(read_all(&a), data, "old map still valid");
}

#[test]
fn roundtrip_i64_and_3d() {
    let dir = temp_dir("npy-i64");
    let path = dir.path().join("y.npy");
    let data: Vec<i64> = vec![-1, 0, 3, 7, 1 << 20, -5];
    write_i64(&path, &[3, 1, 2], &data).unwrap();
    let a = NpyArray::open(&path).unwrap();
    assert_eq!((a.dtype(), a.rows(), a.row_width()), (Dtype::I64, 3, 2));
    let want: Vec<f32> = data.iter().map(|&v| v as f32).collect();
    assert_eq!(read_all(&a), want);
    let mut wrong = [0.0; 3];
    assert!(a.read_row_f32(0, &mut wrong).is_err());
    assert!(a.read_row_f32(3, &mut wrong[..2]).is_err());
    assert!(write_i64(&path, &[4], &data).is_err());
}

#[test]
fn deeply_nested_headers_are_refused_not_recursed_into() {
    let deep = format!(
        "{{'descr': '<f4', 'x': {}0{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let e = header::parse_dict(&deep).unwrap_err();
    assert!(e.contains("deeper than 8 levels"), "{e}");
}

#[test]
fn parses_v1_and_v2_headers() {
    let dir = temp_dir("npy-hdr");
    let data: Vec<u8> = [1.5f64, -2.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let v1 = handmade(
        1,
        "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n",
        &data,
    );
    let a = open_bytes(&dir, "v1.npy", &v1).unwrap();
    assert_eq!((a.dtype(), a.shape()), (Dtype::F64, &[2usize][..]));
    assert_eq!(read_all(&a), vec![1.5, -2.0]);

    // Keys in another order, double quotes, odd spacing, version 2.0.
    let ints: Vec<u8> = [-3i16, 4, 5, -6]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let dict = "{\"shape\":(2,2),  'fortran_order' :False,'descr':'<i2'}";
    let a = open_bytes(&dir, "v2.npy", &handmade(2, dict, &ints)).unwrap();
    assert_eq!((a.dtype(), a.shape()), (Dtype::I16, &[2usize, 2][..]));
    assert_eq!(read_all(&a), vec![-3.0, 4.0, 5.0, -6.0]);

    let bytes = handmade(
        3,
        "{'descr': '|b1', 'fortran_order': False, 'shape': (3,)}",
        &[1, 0, 1],
    );
    let a = open_bytes(&dir, "v3.npy", &bytes).unwrap();
    assert_eq!(read_all(&a), vec![1.0, 0.0, 1.0]);

    let bytes = handmade(
        1,
        "{'descr': '|u1', 'fortran_order': False, 'shape': (0, 5)}",
        &[],
    );
    let a = open_bytes(&dir, "empty.npy", &bytes).unwrap();
    assert_eq!((a.rows(), a.row_width()), (0, 5));
}

fn err_text(r: Result<NpyArray>) -> String {
    r.err().map(|e| e.to_string()).unwrap_or_default()
}

#[test]
fn refuses_bad_files() {
    let dir = temp_dir("npy-bad");
    let four = [0u8; 8];
    let cases = [
        (
            "fortran.npy",
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }",
            &four[..],
            "fortran_order",
        ),
        (
            "big.npy",
            "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }",
            &four[..],
            "big-endian",
        ),
        (
            "obj.npy",
            "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }",
            &four[..],
            "object",
        ),
        (
            "half.npy",
            "{'descr': '<f2', 'fortran_order': False, 'shape': (2,), }",
            &four[..4],
            "unsupported dtype",
        ),
        (
            "short.npy",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }",
            &four[..],
            "truncated",
        ),
        (
            "long.npy",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
            &four[..],
            "beyond",
        ),
        (
            "scalar.npy",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (), }",
            &four[..4],
            "scalar",
        ),
        (
            "rec.npy",
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }",
            &four[..],
            "structured",
        ),
        (
            "noshape.npy",
            "{'descr': '<f4', 'fortran_order': False}",
            &four[..],
            "'shape'",
        ),
    ];
    for (name, dict, data, want) in cases {
        let msg = err_text(open_bytes(&dir, name, &handmade(1, dict, data)));
        assert!(msg.contains(want) && msg.contains(name), "{name}: {msg}");
    }
    let msg = err_text(open_bytes(&dir, "junk.npy", b"hello world, not numpy"));
    assert!(msg.contains("magic") && msg.contains("junk.npy"), "{msg}");
    let mut cut = handmade(
        1,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
        &four,
    );
    cut.truncate(20);
    let msg = err_text(open_bytes(&dir, "cut.npy", &cut));
    assert!(msg.contains("inside the header"), "{msg}");
    let msg = err_text(NpyArray::open(dir.path().join("missing.npy")));
    assert!(msg.contains("missing.npy"), "{msg}");
}

/// Cross-checks with NumPy when it is installed; silently does nothing
/// otherwise.
#[test]
fn numpy_interop_if_available() {
    let py = |code: &str| {
        std::process::Command::new("python3")
            .args(["-c", code])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !py("import numpy") {
        return;
    }
    let dir = temp_dir("npy-numpy");
    let d = dir.path().display().to_string();
    write_f32(
        dir.path().join("ours.npy"),
        &[2, 3],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5],
    )
    .unwrap();
    let script = format!(
        "import numpy as np\n\
         a = np.load('{d}/ours.npy')\n\
         assert a.dtype == np.float32 and a.shape == (2, 3) and a[1, 2] == 6.5\n\
         for t in ['f4', 'f8', 'i1', 'i2', 'i4', 'i8', 'u1', 'u2', 'u4', 'u8', '?']:\n    \
             np.save('{d}/%s.npy' % ('b' if t == '?' else t), (np.arange(6).reshape(3, 2) % 2).astype(t))\n\
         for v in [2, 3]:\n    \
             with open('{d}/v%d.npy' % v, 'wb') as f:\n        \
                 np.lib.format.write_array(f, np.arange(4.0).reshape(2, 2), version=(v, 0))\n\
         np.save('{d}/fortran.npy', np.asfortranarray(np.ones((2, 3))))\n\
         np.save('{d}/big.npy', np.ones(3, dtype='>f4'))\n"
    );
    assert!(py(&script), "numpy script failed");
    for t in [
        "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b",
    ] {
        let a = NpyArray::open(dir.path().join(format!("{t}.npy"))).unwrap();
        assert_eq!(read_all(&a), vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0], "{t}");
    }
    for v in ["v2", "v3"] {
        let a = NpyArray::open(dir.path().join(format!("{v}.npy"))).unwrap();
        assert_eq!(read_all(&a), vec![0.0, 1.0, 2.0, 3.0], "{v}");
    }
    assert!(err_text(NpyArray::open(dir.path().join("fortran.npy"))).contains("fortran_order"));
    assert!(err_text(NpyArray::open(dir.path().join("big.npy"))).contains("big-endian"));
}
