//! The field lexer: a line split at commas (double quotes honoured), the
//! header's names, a numeric cell.

/// The column names of a header line (UTF-8, optional BOM, quotes allowed).
pub(super) fn parse_header(line: &[u8]) -> std::result::Result<Vec<String>, String> {
    let line = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|_| "line 1 (the header) is not UTF-8")?;
    let mut fields = vec![];
    let line = strip_cr(text.as_bytes());
    split_fields(line, &mut fields).map_err(|m| format!("line 1: {m}"))?;
    let names: Vec<String> = fields
        .iter()
        .map(|f| {
            let s = String::from_utf8_lossy(&line[f.start..f.end])
                .trim()
                .to_string();
            if f.quoted { s.replace("\"\"", "\"") } else { s }
        })
        .collect();
    if let Some(i) = names.iter().position(|n| n.is_empty()) {
        return Err(format!("line 1 (the header): column {} has no name", i + 1));
    }
    Ok(names)
}

pub(super) fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// One field of a row: the byte range of its text in the line (inside the
/// quotes if quoted).
#[derive(Clone, Copy)]
pub(super) struct Field {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) quoted: bool,
}

/// Splits a line (without its newline) at commas, honouring double quotes
/// (`""` inside quotes is a literal quote). A newline inside quotes is not
/// supported: such a field is unterminated on its line.
pub(super) fn split_fields(line: &[u8], out: &mut Vec<Field>) -> std::result::Result<(), String> {
    out.clear();
    let mut i = 0;
    loop {
        // Spaces before an opening quote are allowed.
        let lead = line[i..].iter().take_while(|b| **b == b' ').count();
        if line.get(i + lead) == Some(&b'"') {
            let start = i + lead + 1;
            let mut j = start;
            loop {
                match line[j..].iter().position(|b| *b == b'"') {
                    None => {
                        return Err(format!(
                            "field {} has an unterminated quote (newlines inside \
                             quoted fields are not supported)",
                            out.len() + 1
                        ));
                    }
                    Some(q) if line.get(j + q + 1) == Some(&b'"') => j += q + 2,
                    Some(q) => {
                        j += q;
                        break;
                    }
                }
            }
            out.push(Field {
                start,
                end: j,
                quoted: true,
            });
            let after = j + 1;
            let trail = line[after..].iter().take_while(|b| **b == b' ').count();
            match line.get(after + trail) {
                None => return Ok(()),
                Some(b',') => i = after + trail + 1,
                Some(_) => {
                    return Err(format!(
                        "field {} has text after its closing quote",
                        out.len()
                    ));
                }
            }
        } else {
            match line[i..].iter().position(|b| *b == b',') {
                Some(c) => {
                    out.push(Field {
                        start: i,
                        end: i + c,
                        quoted: false,
                    });
                    i += c + 1;
                }
                None => {
                    out.push(Field {
                        start: i,
                        end: line.len(),
                        quoted: false,
                    });
                    return Ok(());
                }
            }
        }
    }
}

/// A numeric cell: empty (or blank) is NaN; otherwise a decimal number,
/// `nan` or `inf` as Rust reads them.
pub(super) fn parse_cell(bytes: &[u8]) -> Option<f32> {
    let s = std::str::from_utf8(bytes).ok()?.trim();
    if s.is_empty() {
        return Some(f32::NAN);
    }
    s.parse::<f32>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(line: &str) -> std::result::Result<Vec<String>, String> {
        let mut fields = vec![];
        split_fields(line.as_bytes(), &mut fields)?;
        Ok(fields
            .iter()
            .map(|f| line[f.start..f.end].to_string())
            .collect())
    }

    #[test]
    fn fields_commas_and_quotes() {
        assert_eq!(texts("a,,b").unwrap(), ["a", "", "b"]);
        assert_eq!(texts("").unwrap(), [""]);
        assert_eq!(
            texts(r#" "x,y" ,"q""q",z"#).unwrap(),
            ["x,y", r#"q""q"#, "z"]
        );
        assert!(
            texts(r#"a,"open"#)
                .unwrap_err()
                .contains("field 2 has an unterminated quote")
        );
        assert!(
            texts(r#""a"b,c"#)
                .unwrap_err()
                .contains("text after its closing quote")
        );
        assert_eq!(
            parse_header(b"\xef\xbb\xbfid,\"a \"\"b\"\"\"\r").unwrap(),
            ["id", "a \"b\""]
        );
        assert!(parse_cell(b" ").unwrap().is_nan());
        assert_eq!(parse_cell(b"-1.5"), Some(-1.5));
        assert_eq!(parse_cell(b"x"), None);
    }
}
