//! The CSV format end to end: written, opened, read back, and its errors.

use super::*;
use crate::data::dir::{DirDataset, write_dataset_dir};
use crate::data::synthetic::Synthetic;

use crate::data::test_util::{TempDir, err, fill, same, temp_dir};

#[test]
fn synthetic_roundtrip_equals_npy() {
    let tmp = temp_dir("csv-roundtrip");
    let syn = Synthetic::new(3, 1000, 77);
    let (c, d) = (tmp.path().join("csv"), tmp.path().join("npy"));
    write_dataset_csv(&syn, &c).unwrap();
    write_dataset_dir(&syn, &d).unwrap();
    assert!(is_csv_dir(&c) && !is_csv_dir(&d));
    let csv = CsvDataset::open(&c).unwrap();
    let npy = DirDataset::open(&d).unwrap();
    assert_eq!(csv.tasks(), syn.tasks());
    assert_eq!(csv.input_dim(), syn.input_dim());
    for split in [Split::Train, Split::Val] {
        let n = syn.len(split) as u64;
        assert_eq!(csv.len(split) as u64, n);
        csv.validate_rows(split, 0, n as usize).unwrap();
        csv.validate_rows(split, 5, 70).unwrap();
        let idx: Vec<u64> = (0..n).rev().step_by(3).chain([0, n - 1, 31, 32]).collect();
        let (x1, l1) = fill(&npy, split, &idx);
        let (x2, l2) = fill(&csv, split, &idx);
        assert!(same(&x1, &x2) && same(&l1, &l2), "{split:?}");
        assert!(l2.iter().any(|v| v.is_nan()));
    }
    let msg = err(write_dataset_csv(&syn, &c));
    assert!(msg.contains("not empty"), "{msg}");
}

const TOML: &str = "[[task]]\nname = \"shape\"\nkind = \"classify\"\nclasses = 3\n\n\
                    [[task]]\nname = \"size\"\nkind = \"regress\"\ndim = 2\n\
                    columns = [\"w\", \"h\"]\n\n\
                    [[task]]\nname = \"flag\"\nkind = \"binary\"\ncolumns = \"ok\"\n";

/// A small hand-written dataset directory with these train rows.
fn handmade(tag: &str, toml: &str, train: &str) -> TempDir {
    let tmp = temp_dir(tag);
    std::fs::write(tmp.path().join(TASKS_FILE), toml).unwrap();
    std::fs::write(tmp.path().join("train.csv"), train).unwrap();
    std::fs::write(
        tmp.path().join("val.csv"),
        "ok,h,w,shape,b,a\n1,2,3,0,5,6\n0,,,,7,8\n",
    )
    .unwrap();
    tmp
}

const TRAIN: &str = "\u{feff}a,\"b\",shape,w,h,ok\r\n\
                     1.5,-2,2,0.25,,1\r\n\
                     \"3\", 4 ,,NaN,1e3,-1\r\n\
                     5,6,-1,1,2,0\r\n\
                     \r\n";

#[test]
fn maps_header_names_quotes_crlf_and_missing() {
    let tmp = handmade("map", TOML, TRAIN);
    let ds = CsvDataset::open(tmp.path()).unwrap();
    assert_eq!(
        (ds.input_dim(), ds.len(Split::Train), ds.len(Split::Val)),
        (2, 3, 2)
    );
    ds.validate_rows(Split::Train, 0, 3).unwrap();
    ds.validate_rows(Split::Val, 0, 2).unwrap();
    let (x, l) = fill(&ds, Split::Train, &[1, 0, 2]);
    assert_eq!(x, [3.0, 4.0, 1.5, -2.0, 5.0, 6.0]);
    let n = f32::NAN;
    assert!(same(
        &l,
        &[n, n, 1000.0, n, 2.0, 0.25, n, 1.0, n, 1.0, 2.0, 0.0]
    ));
    // val.csv has its columns in another order.
    let (x, l) = fill(&ds, Split::Val, &[0, 1]);
    assert_eq!(x, [6.0, 5.0, 8.0, 7.0]);
    assert!(same(&l, &[0.0, 3.0, 2.0, 1.0, n, n, n, 0.0]));
}

#[test]
fn inputs_patterns_and_many_rows() {
    let mut text = String::from("id,x1,x2,y,shape,w,h,ok,x10\n");
    for i in 0..100 {
        text += &format!("{i},{i},{},0,{},1,1,1,7\n", i * 2, i % 3);
    }
    let toml = format!("inputs = [\"x*\"]\n{TOML}");
    let tmp = handmade("glob", &toml, &text);
    std::fs::write(tmp.path().join("val.csv"), &text).unwrap();
    let ds = CsvDataset::open(tmp.path()).unwrap();
    assert_eq!(ds.input_dim(), 3);
    ds.validate_rows(Split::Train, 0, 100).unwrap();
    ds.validate_rows(Split::Train, 33, 64).unwrap();
    let (x, l) = fill(&ds, Split::Train, &[99, 31, 32, 64]);
    assert_eq!(
        x,
        [
            99.0, 198.0, 7.0, 31.0, 62.0, 7.0, 32.0, 64.0, 7.0, 64.0, 128.0, 7.0
        ]
    );
    assert_eq!(l[0], 0.0);
}

#[test]
fn bad_values_name_line_and_column() {
    let cases = [
        (
            "a,b,shape,w,h,ok\n1,2,0,0,0,0\n1,x,0,0,0,0\n",
            "line 3, column 2 ('b'): 'x' is not a number",
        ),
        (
            "a,b,shape,w,h,ok\n1,2,0,0,0,0\n1,2,0,0,0\n",
            "line 3 has 5 fields, but the header has 6",
        ),
        (
            "a,b,shape,w,h,ok\n1,,0,0,0,0\n",
            "line 2, column 2 ('b'): missing input",
        ),
        ("a,b,shape,w,h,ok\n1,inf,0,0,0,0\n", "non-finite input inf"),
        (
            "a,b,shape,w,h,ok\n1,2,3,0,0,0\n",
            "line 2, column 3 ('shape'): label 3 out of range for task 'shape' with 3 classes",
        ),
        (
            "a,b,shape,w,h,ok\n1,2,0.5,0,0,0\n",
            "label 0.5 out of range",
        ),
        (
            "a,b,shape,w,h,ok\n1,2,0,0,0,2\n",
            "column 6 ('ok'): label 2 of binary task 'flag' is not 0 or 1",
        ),
        (
            "a,b,shape,w,h,ok\n1,2,0,0,-inf,0\n",
            "column 5 ('h'): infinite label -inf",
        ),
        (
            "a,b,shape,w,h,ok\n1,\"2,0,0,0,0\n",
            "line 2: field 2 has an unterminated quote",
        ),
        (
            "a,b,shape,w,h,ok\n1,\"2\"x,0,0,0,0\n",
            "field 2 has text after its closing quote",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let tmp = handmade(&format!("bad{i}"), TOML, text);
        let ds = CsvDataset::open(tmp.path()).unwrap();
        let n = ds.len(Split::Train);
        let msg = err(ds.validate_rows(Split::Train, 0, n));
        assert!(
            msg.contains(want) && msg.contains("train.csv"),
            "{text:?}: {msg}"
        );
    }
    // A rank whose slice holds no bad row passes.
    let tmp = handmade("slice", TOML, cases[0].0);
    let ds = CsvDataset::open(tmp.path()).unwrap();
    ds.validate_rows(Split::Train, 0, 1).unwrap();
    assert!(err(ds.validate_rows(Split::Train, 1, 2)).contains("line 3"));
}

#[test]
fn mapping_and_file_errors() {
    let ok = "a,b,shape,w,h,ok\n1,2,0,0,0,0\n";
    let cases: [(&str, &str, &str); 9] = [
        (
            TOML,
            "a,b,w,h,ok\n1,2,0,0,0\n",
            "no column 'shape' (task 'shape') in the header; it has 'a', 'b', 'w', 'h', 'ok'",
        ),
        (
            TOML,
            "a,a,shape,w,h,ok\n1,2,0,0,0,0\n",
            "column 'a' (input) appears more than once",
        ),
        (
            TOML,
            "a,shape,shape,w,h,ok\n1,2,0,0,0,0\n",
            "column 'shape' (task 'shape') appears more than once",
        ),
        (
            &format!("inputs = [\"z*\"]\n{TOML}"),
            ok,
            "inputs: 'z*' (tasks.toml) matches no column",
        ),
        (
            &format!("inputs = [\"a\", \"w\"]\n{TOML}"),
            ok,
            "column 'w' is used twice",
        ),
        (
            &TOML.replace("[\"w\", \"h\"]", "[\"w\"]"),
            ok,
            "task 'size' (regress with 2 label column(s)) lists 1 column(s)",
        ),
        (
            &TOML.replace("columns = \"ok\"", "columns = 3"),
            ok,
            "task 3: columns: expected",
        ),
        (
            &TOML.replace("columns = \"ok\"", "colums = \"ok\""),
            ok,
            "unknown key 'colums'",
        ),
        (TOML, "", "is empty"),
    ];
    for (i, (toml, train, want)) in cases.iter().enumerate() {
        let tmp = handmade(&format!("map{i}"), toml, train);
        let msg = err(CsvDataset::open(tmp.path()));
        assert!(msg.contains(want), "case {i}: {msg}");
    }
    let tmp = handmade("rows", TOML, "a,b,shape,w,h,ok\n\n");
    assert!(err(CsvDataset::open(tmp.path())).contains("has a header but no rows"));
    let tmp = handmade(
        "blank",
        TOML,
        "a,b,shape,w,h,ok\n1,2,0,0,0,0\n\n1,2,0,0,0,0\n",
    );
    assert!(err(CsvDataset::open(tmp.path())).contains("line 3 is empty"));
    // val.csv must carry the same columns.
    let tmp = handmade("val", TOML, ok);
    std::fs::write(tmp.path().join("val.csv"), "a,shape,w,h,ok\n1,0,0,0,0\n").unwrap();
    let msg = err(CsvDataset::open(tmp.path()));
    assert!(
        msg.contains("val.csv") && msg.contains("no column 'b' (input)"),
        "{msg}"
    );
    std::fs::remove_file(tmp.path().join("val.csv")).unwrap();
    assert!(err(CsvDataset::open(tmp.path())).contains("val.csv"));
}

#[test]
fn last_row_without_newline() {
    let tmp = handmade("eof", TOML, "a,b,shape,w,h,ok\n1,2,0,0,0,0\n3,4,1,1,1,1");
    let ds = CsvDataset::open(tmp.path()).unwrap();
    assert_eq!(ds.len(Split::Train), 2);
    ds.validate_rows(Split::Train, 0, 2).unwrap();
    let (x, _) = fill(&ds, Split::Train, &[1]);
    assert_eq!(x, [3.0, 4.0]);
}

#[test]
fn overlong_lines_are_refused_before_they_are_kept() {
    let big = "1,".repeat(MAX_LINE / 2 + 1);
    // A header with no newline at all (as a file of NUL bytes).
    let tmp = handmade("long-header", TOML, &big);
    let msg = err(CsvDataset::open(tmp.path()));
    assert!(msg.contains("line 1 is longer than 16 MiB"), "{msg}");
    // A row far down the file.
    let mut text = String::from("a,shape,w,h,ok\n");
    for i in 0..40 {
        text += &format!("{i},0,1,1,1\n");
    }
    text += &big;
    text += "\n";
    let tmp = handmade("long-row", TOML, &text);
    let msg = err(CsvDataset::open(tmp.path()));
    assert!(msg.contains("line 42 is longer than 16 MiB"), "{msg}");
}

#[test]
fn resident_bytes_count_the_index_and_the_longest_block() {
    let mut text = String::from("a,shape,w,h,ok\n");
    let mut longest = 0;
    let mut block = 0;
    for i in 0..100 {
        let row = format!("{},0,1,1,1\n", "7".repeat(i));
        block += row.len();
        if (i + 1) % BLOCK == 0 || i == 99 {
            longest = longest.max(block);
            block = 0;
        }
        text += &row;
    }
    let tmp = handmade("resident", TOML, &text);
    std::fs::write(tmp.path().join("val.csv"), "a,shape,w,h,ok\n1,0,1,1,1\n").unwrap();
    let ds = CsvDataset::open(tmp.path()).unwrap();
    // 100 rows: 4 block starts and the end; 1 row: 1 start and the end.
    let val = 2 * 8 + "1,0,1,1,1\n".len();
    assert_eq!(ds.resident_bytes(), (5 * 8 + longest + val) as u64);
}
