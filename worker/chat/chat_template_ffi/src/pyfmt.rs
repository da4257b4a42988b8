//! Python's string conversions (`str`, `repr`, `json.dumps`, whitespace) for
//! minijinja values, so that templates written for Jinja2 print what
//! transformers' `apply_chat_template` prints.

use std::fmt::Write;

use minijinja::value::{Value, ValueKind};
use minijinja::{Error, ErrorKind};

/// Python's `str.isspace` for one character (general category Zs, or
/// bidirectional class WS, B or S). Rust's `char::is_whitespace` lacks
/// U+001C..U+001F, which Python strips.
pub fn is_py_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n'
            | '\u{0b}'
            | '\u{0c}'
            | '\r'
            | '\u{1c}'..='\u{1f}'
            | ' '
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

/// Python's `str.splitlines` line boundaries.
fn is_py_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r'
            | '\u{0b}'
            | '\u{0c}'
            | '\u{1c}'
            | '\u{1d}'
            | '\u{1e}'
            | '\u{85}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

/// Python's `str.splitlines(keepends)`.
pub fn py_splitlines(s: &str, keepends: bool) -> Vec<String> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if !is_py_line_break(c) {
            continue;
        }
        let mut end = i + c.len_utf8();
        if c == '\r' {
            if let Some(&(_, '\n')) = chars.peek() {
                chars.next();
                end += 1;
            }
        }
        lines.push(
            if keepends {
                &s[start..end]
            } else {
                &s[start..i]
            }
            .to_string(),
        );
        start = end;
    }
    if start < s.len() {
        lines.push(s[start..].to_string());
    }
    lines
}

/// Python's `str.split(None, maxsplit)`: runs of whitespace separate, leading
/// whitespace is dropped, and the remainder after `maxsplit` splits keeps its
/// trailing whitespace.
pub fn py_split_whitespace(s: &str, maxsplit: Option<i64>) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = s.trim_start_matches(is_py_space);
    let mut splits = 0i64;
    while !rest.is_empty() {
        if maxsplit.is_some_and(|m| m >= 0 && splits >= m) {
            parts.push(rest.to_string());
            break;
        }
        match rest.find(is_py_space) {
            Some(end) => {
                parts.push(rest[..end].to_string());
                rest = rest[end..].trim_start_matches(is_py_space);
                splits += 1;
            }
            None => {
                parts.push(rest.to_string());
                break;
            }
        }
    }
    parts
}

/// Python's `str.rsplit(None, maxsplit)`: as `py_split_whitespace`, from the
/// right.
pub fn py_rsplit_whitespace(s: &str, maxsplit: Option<i64>) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = s.trim_end_matches(is_py_space);
    let mut splits = 0i64;
    while !rest.is_empty() {
        if maxsplit.is_some_and(|m| m >= 0 && splits >= m) {
            parts.push(rest.to_string());
            break;
        }
        match rest.rfind(is_py_space) {
            Some(pos) => {
                let c = rest[pos..].chars().next().map_or(1, char::len_utf8);
                parts.push(rest[pos + c..].to_string());
                rest = rest[..pos].trim_end_matches(is_py_space);
                splits += 1;
            }
            None => {
                parts.push(rest.to_string());
                break;
            }
        }
    }
    parts.reverse();
    parts
}

/// Python's `str.center(width)` (the odd padding goes left when the width is
/// odd, as CPython does).
pub fn py_center(s: &str, width: i64) -> String {
    let len = s.chars().count() as i64;
    let marg = width - len;
    if marg <= 0 {
        return s.to_string();
    }
    let left = marg / 2 + (marg & width & 1);
    format!(
        "{}{}{}",
        " ".repeat(left as usize),
        s,
        " ".repeat((marg - left) as usize)
    )
}

/// Python's `float.__repr__` (shortest round-trip digits; exponent form when
/// the decimal exponent is < -4 or >= 16), used by `str()` and `json.dumps`.
pub fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".to_string();
    }
    if x.is_infinite() {
        return if x < 0.0 { "-inf" } else { "inf" }.to_string();
    }
    // `{:e}` gives Rust's shortest round-trip digits, e.g. "-1.25e-7".
    let sci = format!("{:e}", x);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if !(-4..16).contains(&exp) {
        let mut m = digits[..1].to_string();
        if digits.len() > 1 {
            m.push('.');
            m.push_str(&digits[1..]);
        }
        return format!(
            "{sign}{m}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        );
    }
    let point = exp + 1; // digits before the decimal point
    let body = if point <= 0 {
        format!("0.{}{}", "0".repeat((-point) as usize), digits)
    } else if (point as usize) >= digits.len() {
        format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
    } else {
        format!(
            "{}.{}",
            &digits[..point as usize],
            &digits[point as usize..]
        )
    };
    format!("{sign}{body}")
}

fn is_float(v: &Value) -> bool {
    v.kind() == ValueKind::Number && !v.is_integer()
}

fn as_f64(v: &Value) -> f64 {
    f64::try_from(v.clone()).unwrap_or(f64::NAN)
}

/// Approximates Python's `str.isprintable` for `repr` (no Unicode database
/// here: control, separator, private-use and the common format characters).
fn is_py_printable(c: char) -> bool {
    let u = c as u32;
    !(u < 0x20
        || (0x7f..=0xa0).contains(&u)
        || u == 0xad
        || u == 0x1680
        || (0x2000..=0x200f).contains(&u)
        || (0x2028..=0x202f).contains(&u)
        || (0x205f..=0x2064).contains(&u)
        || (0x2066..=0x206f).contains(&u)
        || u == 0x3000
        || u == 0xfeff
        || (0xfff9..=0xfffb).contains(&u)
        || (0xe000..=0xf8ff).contains(&u)
        || u >= 0xf0000
        || (0xe0000..=0xe007f).contains(&u))
}

/// Python's `repr(str)`.
pub fn py_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if is_py_printable(c) => out.push(c),
            c if (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push(quote);
    out
}

fn map_pairs(v: &Value) -> Vec<(Value, Value)> {
    v.as_object()
        .and_then(|o| o.try_iter_pairs())
        .map(|it| it.collect())
        .unwrap_or_default()
}

fn seq_items(v: &Value) -> Vec<Value> {
    v.try_iter().map(|it| it.collect()).unwrap_or_default()
}

/// Python's `str(x)` as Jinja2 prints `{{ x }}`.
pub fn py_str(v: &Value) -> String {
    match v.kind() {
        ValueKind::String => v.as_str().unwrap_or_default().to_string(),
        _ => py_repr_inner(v, false),
    }
}

/// Python's `repr(x)`.
pub fn py_repr(v: &Value) -> String {
    py_repr_inner(v, true)
}

fn py_repr_inner(v: &Value, quote_strings: bool) -> String {
    match v.kind() {
        ValueKind::Undefined => {
            if quote_strings {
                "Undefined".to_string()
            } else {
                String::new()
            }
        }
        ValueKind::None => "None".to_string(),
        ValueKind::Bool => if v.is_true() { "True" } else { "False" }.to_string(),
        ValueKind::Number if is_float(v) => py_float_repr(as_f64(v)),
        ValueKind::String if quote_strings => py_repr_str(v.as_str().unwrap_or_default()),
        ValueKind::Seq => {
            let items: Vec<String> = seq_items(v).iter().map(py_repr).collect();
            if v.is_tuple() {
                if items.len() == 1 {
                    format!("({},)", items[0])
                } else {
                    format!("({})", items.join(", "))
                }
            } else {
                format!("[{}]", items.join(", "))
            }
        }
        ValueKind::Map => {
            let items: Vec<String> = map_pairs(v)
                .iter()
                .map(|(k, val)| format!("{}: {}", py_repr(k), py_repr(val)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        _ => v.to_string(),
    }
}

/// Options of Python's `json.dumps` that transformers' `tojson` exposes.
pub struct JsonOptions {
    pub ensure_ascii: bool,
    /// `None`: one line; `Some(s)`: newline and `s` per nesting level.
    pub indent: Option<String>,
    pub item_separator: String,
    pub key_separator: String,
    pub sort_keys: bool,
}

fn json_escape(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && (c as u32) > 0x7e) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{:04x}", unit);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_float(x: f64) -> String {
    if x.is_nan() {
        "NaN".to_string()
    } else if x.is_infinite() {
        if x < 0.0 { "-Infinity" } else { "Infinity" }.to_string()
    } else {
        py_float_repr(x)
    }
}

fn json_key(k: &Value) -> Result<String, Error> {
    Ok(match k.kind() {
        ValueKind::String => k.as_str().unwrap_or_default().to_string(),
        ValueKind::Bool => if k.is_true() { "true" } else { "false" }.to_string(),
        ValueKind::None => "null".to_string(),
        ValueKind::Number if is_float(k) => json_float(as_f64(k)),
        ValueKind::Number => k.to_string(),
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("keys must be str, int, float, bool or None, not {other}"),
            ))
        }
    })
}

fn newline_indent(opts: &JsonOptions, level: usize, out: &mut String) {
    if let Some(indent) = &opts.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(indent);
        }
    }
}

fn json_write(v: &Value, opts: &JsonOptions, level: usize, out: &mut String) -> Result<(), Error> {
    match v.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number if is_float(v) => out.push_str(&json_float(as_f64(v))),
        ValueKind::Number => {
            let _ = write!(out, "{v}");
        }
        ValueKind::String => json_escape(v.as_str().unwrap_or_default(), opts.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items = seq_items(v);
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_separator);
                }
                newline_indent(opts, level + 1, out);
                json_write(item, opts, level + 1, out)?;
            }
            newline_indent(opts, level, out);
            out.push(']');
        }
        ValueKind::Map => {
            let mut pairs = Vec::new();
            for (k, val) in map_pairs(v) {
                pairs.push((json_key(&k)?, val));
            }
            if pairs.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if opts.sort_keys {
                pairs.sort_by(|a, b| a.0.cmp(&b.0));
            }
            out.push('{');
            for (i, (k, val)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_separator);
                }
                newline_indent(opts, level + 1, out);
                json_escape(k, opts.ensure_ascii, out);
                out.push_str(&opts.key_separator);
                json_write(val, opts, level + 1, out)?;
            }
            newline_indent(opts, level, out);
            out.push('}');
        }
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("Object of type {other} is not JSON serializable"),
            ))
        }
    }
    Ok(())
}

/// Python's `json.dumps(v, ...)`.
pub fn py_json_dumps(v: &Value, opts: &JsonOptions) -> Result<String, Error> {
    let mut out = String::new();
    json_write(v, opts, 0, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.25e-7, "1.25e-07"),
            (123456.789, "123456.789"),
            (-0.0, "-0.0"),
            (1e100, "1e+100"),
        ];
        for (x, want) in cases {
            assert_eq!(py_float_repr(x), want, "{x}");
        }
    }

    #[test]
    fn split_and_lines_match_python() {
        assert_eq!(py_split_whitespace("  a \x1c b  c ", None), ["a", "b", "c"]);
        assert_eq!(py_split_whitespace("  a b c ", Some(1)), ["a", "b c "]);
        assert!(py_split_whitespace("   ", None).is_empty());
        assert_eq!(py_splitlines("a\r\nb\rc\n", false), ["a", "b", "c"]);
        assert_eq!(py_splitlines("a\r\nb\x0bc", true), ["a\r\n", "b\x0b", "c"]);
    }

    #[test]
    fn rsplit_and_center_match_python() {
        assert_eq!(py_rsplit_whitespace("  a b  c ", None), ["a", "b", "c"]);
        assert_eq!(py_rsplit_whitespace("  a b  c ", Some(1)), ["  a b", "c"]);
        assert_eq!(py_center("abc", 9), "   abc   ");
        assert_eq!(py_center("ab", 5), "  ab ");
        assert_eq!(py_center("abc", 6), " abc  ");
        assert_eq!(py_center("abc", 2), "abc");
    }

    #[test]
    fn repr_matches_python() {
        assert_eq!(py_repr_str("it's"), "\"it's\"");
        assert_eq!(py_repr_str("a'\"b\n"), "'a\\'\"b\\n'");
        assert_eq!(py_repr_str("\u{7f}é"), "'\\x7fé'");
        let v = Value::from(vec![Value::from(1), Value::from("a"), Value::from(())]);
        assert_eq!(py_str(&v), "[1, 'a', None]");
    }
}
