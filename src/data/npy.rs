//! NumPy `.npy` files: memory-mapped reading (a rank only touches the pages
//! of the rows it reads) and atomic writing.
//!
//! Format: magic `\x93NUMPY`, version bytes, header length (u16 for 1.0,
//! u32 for 2.0/3.0), then a Python dict literal with `descr`,
//! `fortran_order` and `shape`, then the raw C-order data.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Error, Result};

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Written headers are padded so the data starts on this boundary.
const ALIGN: usize = 64;

/// Element types this reader understands (all read as little-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
            Dtype::I16 | Dtype::U16 => 2,
            Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F64)
    }

    /// The NumPy name ("float32", "int64", ...), for messages.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
            Dtype::I8 => "int8",
            Dtype::I16 => "int16",
            Dtype::I32 => "int32",
            Dtype::I64 => "int64",
            Dtype::U8 => "uint8",
            Dtype::U16 => "uint16",
            Dtype::U32 => "uint32",
            Dtype::U64 => "uint64",
            Dtype::Bool => "bool",
        }
    }

    /// Parses a `descr` string such as `'<f4'` or `'|u1'`.
    fn parse(descr: &str) -> std::result::Result<Self, String> {
        let mut chars = descr.chars();
        let order = chars.next().unwrap_or(' ');
        let code = chars.as_str();
        let dtype = match code {
            "f4" => Dtype::F32,
            "f8" => Dtype::F64,
            "i1" => Dtype::I8,
            "i2" => Dtype::I16,
            "i4" => Dtype::I32,
            "i8" => Dtype::I64,
            "u1" => Dtype::U8,
            "u2" => Dtype::U16,
            "u4" => Dtype::U32,
            "u8" => Dtype::U64,
            "b1" => Dtype::Bool,
            _ if code.starts_with('O') => {
                return Err(format!(
                    "object arrays (dtype '{descr}') are not supported; save a numeric array"
                ));
            }
            _ => {
                return Err(format!(
                    "unsupported dtype '{descr}'; supported: float32, float64, \
                     int8/16/32/64, uint8/16/32/64 and bool, little-endian"
                ));
            }
        };
        let little = cfg!(target_endian = "little");
        match order {
            '<' | '|' => Ok(dtype),
            '=' if little => Ok(dtype),
            // Byte order is meaningless for one-byte types.
            '>' | '=' if dtype.size() == 1 => Ok(dtype),
            '>' | '=' => Err(format!(
                "big-endian dtype '{descr}' is not supported; \
                 convert with arr.astype(arr.dtype.newbyteorder('<'))"
            )),
            _ => Err(format!("malformed dtype '{descr}'")),
        }
    }

    fn descr(self) -> &'static str {
        match self {
            Dtype::F32 => "<f4",
            Dtype::F64 => "<f8",
            Dtype::I8 => "|i1",
            Dtype::I16 => "<i2",
            Dtype::I32 => "<i4",
            Dtype::I64 => "<i8",
            Dtype::U8 => "|u1",
            Dtype::U16 => "<u2",
            Dtype::U32 => "<u4",
            Dtype::U64 => "<u8",
            Dtype::Bool => "|b1",
        }
    }
}

/// The parsed header of a `.npy` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte offset of the first element.
    pub data_offset: usize,
}

/// Parses the header at the start of `bytes` (the whole file or a prefix
/// holding at least the header). Errors do not name the file; callers add it.
pub fn parse_header(bytes: &[u8]) -> std::result::Result<Header, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file (missing \\x93NUMPY magic)".into());
    }
    let major = bytes[6];
    let (len_end, header_len) = match major {
        1 => (10, u16::from_le_bytes([bytes[8], bytes[9]]) as usize),
        2 | 3 => {
            let b = bytes.get(8..12).ok_or("file ends inside the header")?;
            (12, u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        }
        v => return Err(format!("unsupported .npy format version {v}.{}", bytes[7])),
    };
    let data_offset = len_end + header_len;
    let raw = bytes
        .get(len_end..data_offset)
        .ok_or("file ends inside the header")?;
    // Versions 1 and 2 are latin-1, version 3 is UTF-8.
    let text: String = if major == 3 {
        std::str::from_utf8(raw)
            .map_err(|_| "header is not valid UTF-8")?
            .to_owned()
    } else {
        raw.iter().map(|&b| b as char).collect()
    };
    let (dtype, shape) = parse_dict(&text)?;
    Ok(Header {
        dtype,
        shape,
        data_offset,
    })
}

/// Extracts dtype and shape from the header dict, refusing Fortran order.
fn parse_dict(text: &str) -> std::result::Result<(Dtype, Vec<usize>), String> {
    let mut p = Literal::new(text);
    let Value::Dict(entries) = p.value()? else {
        return Err("header is not a dict".into());
    };
    let get = |key: &str| {
        entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .ok_or(format!("header has no '{key}' entry"))
    };
    let dtype = match get("descr")? {
        Value::Str(s) => Dtype::parse(s)?,
        _ => return Err("structured dtypes (record arrays) are not supported".into()),
    };
    match get("fortran_order")? {
        Value::Bool(false) => {}
        Value::Bool(true) => {
            return Err("fortran_order arrays are not supported; \
                        save np.ascontiguousarray(arr) instead"
                .into());
        }
        _ => return Err("'fortran_order' is not True or False".into()),
    }
    let Value::Tuple(dims) = get("shape")? else {
        return Err("'shape' is not a tuple".into());
    };
    let shape = dims
        .iter()
        .map(|d| match d {
            Value::Int(n) => usize::try_from(*n).map_err(|_| format!("dimension {n} too large")),
            _ => Err("'shape' holds a non-integer".to_string()),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((dtype, shape))
}

/// The subset of Python literals that appears in `.npy` headers.
#[derive(Debug)]
enum Value {
    Str(String),
    Int(u64),
    Bool(bool),
    None,
    Tuple(Vec<Value>),
    /// Only structured dtypes use lists; their items are not needed.
    List,
    Dict(Vec<(String, Value)>),
}

struct Literal<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Literal<'a> {
    fn new(text: &'a str) -> Self {
        Literal {
            s: text.as_bytes(),
            pos: 0,
        }
    }

    fn peek(&mut self) -> Option<u8> {
        while self
            .s
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_whitespace())
        {
            self.pos += 1;
        }
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn value(&mut self) -> std::result::Result<Value, String> {
        match self.peek() {
            Some(b'{') => self.dict(),
            Some(b'(') => self.seq(b')').map(Value::Tuple),
            Some(b'[') => self.seq(b']').map(|_| Value::List),
            Some(q @ (b'\'' | b'"')) => self.string(q).map(Value::Str),
            Some(c) if c.is_ascii_digit() => self.int(),
            Some(c) if c.is_ascii_alphabetic() => self.word(),
            _ => Err(format!("malformed header dict at byte {}", self.pos)),
        }
    }

    fn dict(&mut self) -> std::result::Result<Value, String> {
        self.pos += 1;
        let mut entries = Vec::new();
        while !self.eat(b'}') {
            let Value::Str(key) = self.value()? else {
                return Err("header dict key is not a string".into());
            };
            if !self.eat(b':') {
                return Err(format!("expected ':' after '{key}' in header"));
            }
            entries.push((key, self.value()?));
            if !self.eat(b',') && self.peek() != Some(b'}') {
                return Err("expected ',' or '}' in header dict".into());
            }
        }
        Ok(Value::Dict(entries))
    }

    fn seq(&mut self, close: u8) -> std::result::Result<Vec<Value>, String> {
        self.pos += 1;
        let mut items = Vec::new();
        while !self.eat(close) {
            items.push(self.value()?);
            if !self.eat(b',') && self.peek() != Some(close) {
                return Err("expected ',' in header tuple or list".into());
            }
        }
        Ok(items)
    }

    fn string(&mut self, quote: u8) -> std::result::Result<String, String> {
        let start = self.pos + 1;
        let len = self.s[start..]
            .iter()
            .position(|&c| c == quote)
            .ok_or("unterminated string in header")?;
        self.pos = start + len + 1;
        Ok(String::from_utf8_lossy(&self.s[start..start + len]).into_owned())
    }

    fn int(&mut self) -> std::result::Result<Value, String> {
        let start = self.pos;
        while self.s.get(self.pos).is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        // Python 2 wrote long integers with an `L` suffix.
        let digits = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
        if self.s.get(self.pos) == Some(&b'L') {
            self.pos += 1;
        }
        digits
            .parse()
            .map(Value::Int)
            .map_err(|_| format!("integer {digits} in header is too large"))
    }

    fn word(&mut self) -> std::result::Result<Value, String> {
        let start = self.pos;
        while self
            .s
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_alphanumeric())
        {
            self.pos += 1;
        }
        match &self.s[start..self.pos] {
            b"True" => Ok(Value::Bool(true)),
            b"False" => Ok(Value::Bool(false)),
            b"None" => Ok(Value::None),
            w => Err(format!(
                "unexpected '{}' in header",
                String::from_utf8_lossy(w)
            )),
        }
    }
}

/// A memory-mapped, C-order `.npy` array read row by row.
#[derive(Debug)]
pub struct NpyArray {
    path: PathBuf,
    dtype: Dtype,
    shape: Vec<usize>,
    mmap: Mmap,
    data_offset: usize,
}

impl NpyArray {
    /// Maps the file and checks its header and size.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if len < 10 {
            return Err(Error::data(&path, "file too short to be a .npy file"));
        }
        // SAFETY: the map is read-only; as with any mmap, another process
        // truncating or rewriting the file while we run is not guarded
        // against (the writer in this module replaces files by rename,
        // which leaves existing maps intact).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let header = parse_header(&mmap).map_err(|m| Error::data(&path, m))?;
        if header.shape.is_empty() {
            return Err(Error::data(
                &path,
                "holds a scalar (shape ()); expected an array with one row per sample",
            ));
        }
        check_size(&header, mmap.len()).map_err(|m| Error::data(&path, m))?;
        Ok(NpyArray {
            path,
            dtype: header.dtype,
            shape: header.shape,
            mmap,
            data_offset: header.data_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of rows (`shape[0]`).
    pub fn rows(&self) -> usize {
        self.shape[0]
    }

    /// Elements per row: the product of `shape[1..]` (1 for 1-D arrays).
    pub fn row_width(&self) -> usize {
        self.shape[1..].iter().product()
    }

    /// Reads row `i` into `out` (length `row_width()`), converting to f32.
    pub fn read_row_f32(&self, i: usize, out: &mut [f32]) -> Result<()> {
        let w = self.row_width();
        if i >= self.rows() || out.len() != w {
            return Err(Error::data(
                &self.path,
                format!(
                    "read of row {i} into {} values, but the array has {} rows of {w}",
                    out.len(),
                    self.rows()
                ),
            ));
        }
        // In bounds: the size check at open covers rows() * w elements.
        let size = self.dtype.size();
        let start = self.data_offset + i * w * size;
        let src = &self.mmap[start..start + w * size];
        convert_to_f32(self.dtype, src, out);
        Ok(())
    }
}

/// Checks that the file holds exactly the data the header promises.
fn check_size(h: &Header, file_len: usize) -> std::result::Result<(), String> {
    let data_len = h
        .shape
        .iter()
        .try_fold(h.dtype.size(), |a, &d| a.checked_mul(d))
        .ok_or("shape too large")?;
    let expected = h.data_offset as u128 + data_len as u128;
    let found = file_len as u128;
    if found < expected {
        Err(format!(
            "truncated: shape {:?} of {} needs {expected} bytes, file has {found}",
            h.shape,
            h.dtype.name()
        ))
    } else if found > expected {
        Err(format!(
            "{} bytes beyond the data for shape {:?} of {}",
            found - expected,
            h.shape,
            h.dtype.name()
        ))
    } else {
        Ok(())
    }
}

/// Decodes `N`-byte little-endian elements at any alignment.
fn decode<const N: usize>(src: &[u8], out: &mut [f32], f: impl Fn([u8; N]) -> f32) {
    for (o, c) in out.iter_mut().zip(src.chunks_exact(N)) {
        let mut b = [0u8; N];
        b.copy_from_slice(c);
        *o = f(b);
    }
}

fn convert_to_f32(dtype: Dtype, src: &[u8], out: &mut [f32]) {
    match dtype {
        Dtype::F32 => decode(src, out, f32::from_le_bytes),
        Dtype::F64 => decode(src, out, |b| f64::from_le_bytes(b) as f32),
        Dtype::I8 => decode(src, out, |b| i8::from_le_bytes(b) as f32),
        Dtype::I16 => decode(src, out, |b| i16::from_le_bytes(b) as f32),
        Dtype::I32 => decode(src, out, |b| i32::from_le_bytes(b) as f32),
        Dtype::I64 => decode(src, out, |b| i64::from_le_bytes(b) as f32),
        Dtype::U8 => decode(src, out, |b| u8::from_le_bytes(b) as f32),
        Dtype::U16 => decode(src, out, |b| u16::from_le_bytes(b) as f32),
        Dtype::U32 => decode(src, out, |b| u32::from_le_bytes(b) as f32),
        Dtype::U64 => decode(src, out, |b| u64::from_le_bytes(b) as f32),
        Dtype::Bool => decode(src, out, |b: [u8; 1]| f32::from(b[0] != 0)),
    }
}

/// A version 1.0 header whose data starts at a multiple of [`ALIGN`].
fn encode_header(dtype: Dtype, shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [d] => format!("({d},)"),
        _ => {
            let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            format!("({})", parts.join(", "))
        }
    };
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {dims}, }}",
        dtype.descr()
    );
    // 10 bytes of magic, version and length; the dict ends with '\n'.
    let pad = (ALIGN - (10 + dict.len() + 1) % ALIGN) % ALIGN;
    dict.extend(std::iter::repeat_n(' ', pad));
    dict.push('\n');
    let mut out = Vec::with_capacity(10 + dict.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    // Shapes are short, so the dict always fits the u16 length of v1.0.
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// Writes a float32 array.
pub fn write_f32(path: impl AsRef<Path>, shape: &[usize], data: &[f32]) -> Result<()> {
    write_array(path.as_ref(), Dtype::F32, shape, data.len(), |w| {
        data.iter().try_for_each(|v| w.write_all(&v.to_le_bytes()))
    })
}

/// Writes an int64 array.
pub fn write_i64(path: impl AsRef<Path>, shape: &[usize], data: &[i64]) -> Result<()> {
    write_array(path.as_ref(), Dtype::I64, shape, data.len(), |w| {
        data.iter().try_for_each(|v| w.write_all(&v.to_le_bytes()))
    })
}

/// Writes header and data to a temporary file beside `path`, then renames
/// it over `path`, so readers never see a half-written array.
fn write_array(
    path: &Path,
    dtype: Dtype,
    shape: &[usize],
    len: usize,
    body: impl FnOnce(&mut BufWriter<&File>) -> std::io::Result<()>,
) -> Result<()> {
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if numel != Some(len) {
        return Err(Error::data(
            path,
            format!("cannot write {len} values as shape {shape:?}"),
        ));
    }
    let header = encode_header(dtype, shape);
    crate::fsutil::write_atomic_with(path, crate::fsutil::Access::Shared, |w| {
        w.write_all(&header)?;
        body(w)
    })
}

#[cfg(test)]
mod tests {
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
}
