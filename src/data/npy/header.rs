//! The `.npy` header: magic `\x93NUMPY`, version bytes, header length (u16
//! for 1.0, u32 for 2.0/3.0), then a Python dict literal with `descr`,
//! `fortran_order` and `shape`; parsed (any version) and written (1.0,
//! padded so the data is aligned).

pub(super) const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Written headers are padded so the data starts on this boundary.
pub(super) const ALIGN: usize = 64;

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
    // NumPy itself refuses headers over 10 kB unless told otherwise.
    if header_len > MAX_HEADER_BYTES {
        return Err(format!(
            "header of {header_len} bytes (at most {MAX_HEADER_BYTES} accepted)"
        ));
    }
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
pub(super) fn parse_dict(text: &str) -> std::result::Result<(Dtype, Vec<usize>), String> {
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

/// Largest header accepted (real ones are a few hundred bytes).
const MAX_HEADER_BYTES: usize = 1 << 20;

/// Deepest nesting of dicts, tuples and lists a header may have (real
/// headers have 2: a dict holding the shape tuple).
const MAX_DEPTH: usize = 8;

struct Literal<'a> {
    s: &'a [u8],
    pos: usize,
    /// Dicts, tuples and lists open around `pos` (bounded: a header of
    /// nested brackets must not exhaust the stack).
    depth: usize,
}

impl<'a> Literal<'a> {
    fn new(text: &'a str) -> Self {
        Literal {
            s: text.as_bytes(),
            pos: 0,
            depth: 0,
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
        if matches!(self.peek(), Some(b'{' | b'(' | b'[')) {
            if self.depth == MAX_DEPTH {
                return Err(format!(
                    "header nests dicts, tuples or lists deeper than {MAX_DEPTH} levels"
                ));
            }
            self.depth += 1;
            let v = self.nested();
            self.depth -= 1;
            return v;
        }
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

    /// The dict, tuple or list at `pos`.
    fn nested(&mut self) -> std::result::Result<Value, String> {
        match self.peek() {
            Some(b'{') => self.dict(),
            Some(b'(') => self.seq(b')').map(Value::Tuple),
            _ => self.seq(b']').map(|_| Value::List),
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

/// A version 1.0 header whose data starts at a multiple of [`ALIGN`].
pub(super) fn encode_header(dtype: Dtype, shape: &[usize]) -> Vec<u8> {
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
