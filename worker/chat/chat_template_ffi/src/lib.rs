//! Hugging Face chat templates rendered with minijinja (as in Hugging Face
//! TGI), configured to behave like transformers' `apply_chat_template`
//! (Jinja2 `ImmutableSandboxedEnvironment(trim_blocks=True,
//! lstrip_blocks=True)` with its `raise_exception`, `tojson` and
//! `strftime_now`), behind a C ABI for the C++ worker.
//!
//! C ABI (see chat_template_ffi.h):
//!   compile(source) -> handle | syntax error
//!   render(handle, json context) -> text | error
//! Strings returned to C are malloc'd, NUL-terminated, and carry their
//! length (rendered text may contain NUL); free them with
//! `llorch_chat_template_free`.

mod pyfmt;
mod strftime;

use std::ffi::{c_char, c_int};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{from_args, Kwargs, Rest, Tuple, Value, ValueKind, ValueOrKwargs};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, UndefinedBehavior};

pub const LLORCH_CHAT_TEMPLATE_OK: c_int = 0;
/// The template does not compile; the message names line and column.
pub const LLORCH_CHAT_TEMPLATE_SYNTAX_ERROR: c_int = 1;
/// The template called raise_exception(msg); the message is msg verbatim.
pub const LLORCH_CHAT_TEMPLATE_RAISED: c_int = 2;
/// Any other render failure (undefined attribute, type error, ...).
pub const LLORCH_CHAT_TEMPLATE_RENDER_ERROR: c_int = 3;
/// Bad arguments: null pointers, context that is not a JSON object.
pub const LLORCH_CHAT_TEMPLATE_INVALID_INPUT: c_int = 4;
/// A panic inside the renderer (a bug); caught so it never unwinds into C++.
pub const LLORCH_CHAT_TEMPLATE_INTERNAL_ERROR: c_int = 5;

const TEMPLATE_NAME: &str = "chat_template";

/// Carried as the source of the error raise_exception returns, so that the
/// caller can tell the template's own message from engine errors.
#[derive(Debug)]
struct RaisedException(String);

impl fmt::Display for RaisedException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

fn raise_exception(message: Value) -> Result<Value, Error> {
    let message = pyfmt::py_str(&message);
    Err(Error::new(ErrorKind::InvalidOperation, message.clone())
        .with_source(RaisedException(message)))
}

fn py_strip(s: &str, chars: Option<&str>, left: bool, right: bool) -> String {
    let chars: Option<Vec<char>> = chars.map(|c| c.chars().collect());
    let is_strip = |c: char| match &chars {
        Some(set) => set.contains(&c),
        None => pyfmt::is_py_space(c),
    };
    let mut out = s;
    if left {
        out = out.trim_start_matches(is_strip);
    }
    if right {
        out = out.trim_end_matches(is_strip);
    }
    out.to_string()
}

/// Python string/dict/list methods (minijinja-contrib's pycompat), with the
/// whitespace-sensitive string methods replaced by Python's exact
/// definitions of whitespace and line breaks.
fn py_method(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    if let Some(s) = value.as_str() {
        match method {
            "strip" | "lstrip" | "rstrip" => {
                let (chars,): (Option<Value>,) = from_args(args)?;
                let chars = match &chars {
                    Some(c) if !c.is_none() => Some(c.as_str().ok_or_else(|| {
                        Error::new(
                            ErrorKind::InvalidOperation,
                            format!("{method} arg must be None or str"),
                        )
                    })?),
                    _ => None,
                };
                return Ok(Value::from(py_strip(
                    s,
                    chars,
                    method != "rstrip",
                    method != "lstrip",
                )));
            }
            "split" => {
                let (sep, maxsplit): (Option<Value>, Option<i64>) = from_args(args)?;
                if sep.as_ref().is_none_or(|v| v.is_none()) {
                    return Ok(Value::from(
                        pyfmt::py_split_whitespace(s, maxsplit)
                            .into_iter()
                            .map(Value::from)
                            .collect::<Vec<_>>(),
                    ));
                }
                if sep.as_ref().and_then(|v| v.as_str()) == Some("") {
                    return Err(Error::new(ErrorKind::InvalidOperation, "empty separator"));
                }
            }
            "rsplit" => {
                let (sep, maxsplit): (Option<Value>, Option<i64>) = from_args(args)?;
                let parts: Vec<String> = match sep.as_ref().filter(|v| !v.is_none()) {
                    None => pyfmt::py_rsplit_whitespace(s, maxsplit),
                    Some(sep) => {
                        let sep = sep.as_str().ok_or_else(|| {
                            Error::new(ErrorKind::InvalidOperation, "must be str or None")
                        })?;
                        if sep.is_empty() {
                            return Err(Error::new(ErrorKind::InvalidOperation, "empty separator"));
                        }
                        let mut parts: Vec<String> = match maxsplit {
                            Some(m) if m >= 0 => {
                                s.rsplitn(m as usize + 1, sep).map(str::to_string).collect()
                            }
                            _ => s.rsplit(sep).map(str::to_string).collect(),
                        };
                        parts.reverse();
                        parts
                    }
                };
                return Ok(Value::from(
                    parts.into_iter().map(Value::from).collect::<Vec<_>>(),
                ));
            }
            "removeprefix" | "removesuffix" => {
                let (affix,): (&str,) = from_args(args)?;
                let out = if method == "removeprefix" {
                    s.strip_prefix(affix).unwrap_or(s)
                } else {
                    s.strip_suffix(affix).unwrap_or(s)
                };
                return Ok(Value::from(out));
            }
            "partition" | "rpartition" => {
                let (sep,): (&str,) = from_args(args)?;
                if sep.is_empty() {
                    return Err(Error::new(ErrorKind::InvalidOperation, "empty separator"));
                }
                let found = if method == "partition" {
                    s.find(sep)
                } else {
                    s.rfind(sep)
                };
                let (head, mid, tail) = match found {
                    Some(i) => (&s[..i], sep, &s[i + sep.len()..]),
                    None if method == "partition" => (s, "", ""),
                    None => ("", "", s),
                };
                return Ok(Value::from(Tuple::from([
                    Value::from(head),
                    Value::from(mid),
                    Value::from(tail),
                ])));
            }
            "splitlines" => {
                let (keepends,): (Option<bool>,) = from_args(args)?;
                return Ok(Value::from(
                    pyfmt::py_splitlines(s, keepends.unwrap_or(false))
                        .into_iter()
                        .map(Value::from)
                        .collect::<Vec<_>>(),
                ));
            }
            "isspace" => {
                let () = from_args(args)?;
                return Ok(Value::from(
                    !s.is_empty() && s.chars().all(pyfmt::is_py_space),
                ));
            }
            _ => {}
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// Jinja2's `trim(value, chars=None)`: `str(value).strip(chars)`.
fn trim_filter(value: &Value, chars: Option<Value>) -> Result<Value, Error> {
    let s = pyfmt::py_str(value);
    let chars = chars.filter(|c| !c.is_none());
    Ok(Value::from(py_strip(
        &s,
        chars.as_ref().and_then(|c| c.as_str()),
        true,
        true,
    )))
}

/// Jinja2's `string` filter: Python's `str(value)`.
fn string_filter(value: &Value) -> Value {
    if value.kind() == ValueKind::String {
        value.clone()
    } else {
        Value::from(pyfmt::py_str(value))
    }
}

/// Widths and indents a template may ask for: a larger one is an error, not
/// an allocation the process cannot survive (Rust aborts when one fails).
const MAX_PADDING: i64 = 1 << 16;

/// Jinja2's `center(value, width=80)`.
fn center_filter(value: &Value, width: Option<i64>) -> Result<Value, Error> {
    let width = width.unwrap_or(80);
    if width > MAX_PADDING {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("center width {width} is over {MAX_PADDING}"),
        ));
    }
    Ok(Value::from(pyfmt::py_center(&pyfmt::py_str(value), width)))
}

/// Jinja2's `truncate(s, length=255, killwords=False, end='...',
/// leeway=5)`, positional or keyword (minijinja-contrib's takes keywords only).
fn truncate_filter(value: &Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    let args = args.into_values();
    let (length, killwords, end, leeway, kwargs): (
        Option<i64>,
        Option<bool>,
        Option<String>,
        Option<i64>,
        Kwargs,
    ) = from_args(&args)?;
    let length = kwargs
        .get::<Option<i64>>("length")?
        .or(length)
        .unwrap_or(255);
    let killwords = kwargs
        .get::<Option<bool>>("killwords")?
        .or(killwords)
        .unwrap_or(false);
    let end = kwargs
        .get::<Option<String>>("end")?
        .or(end)
        .unwrap_or_else(|| "...".to_string());
    let leeway = kwargs.get::<Option<i64>>("leeway")?.or(leeway).unwrap_or(5);
    kwargs.assert_all_used()?;
    let s = pyfmt::py_str(value);
    let chars: Vec<char> = s.chars().collect();
    let end_len = end.chars().count() as i64;
    if length < end_len {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("expected length >= {end_len}, got {length}"),
        ));
    }
    if leeway < 0 {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("expected leeway >= 0, got {leeway}"),
        ));
    }
    if chars.len() as i64 <= length + leeway {
        return Ok(Value::from(s));
    }
    let head: String = chars[..(length - end_len) as usize].iter().collect();
    let kept = if killwords {
        head.as_str()
    } else {
        head.rsplit_once(' ').map_or(head.as_str(), |(a, _)| a)
    };
    Ok(Value::from(format!("{kept}{end}")))
}

/// Jinja2's `wordcount`: the number of `\w+` runs.
fn wordcount_filter(value: &Value) -> Value {
    let s = pyfmt::py_str(value);
    let mut count = 0;
    let mut in_word = false;
    for c in s.chars() {
        let word = c.is_alphanumeric() || c == '_';
        if word && !in_word {
            count += 1;
        }
        in_word = word;
    }
    Value::from(count)
}

/// transformers' tojson: `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)` (no HTML escaping, Python's default
/// ", " and ": " separators).
fn tojson_filter(value: &Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    let args = args.into_values();
    // Positional order as in transformers' tojson(x, ensure_ascii, indent,
    // separators, sort_keys); keywords override.
    let (ensure_ascii, indent, separators, sort_keys, kwargs): (
        Option<bool>,
        Option<Value>,
        Option<Value>,
        Option<bool>,
        Kwargs,
    ) = from_args(&args)?;
    let ensure_ascii = kwargs
        .get::<Option<bool>>("ensure_ascii")?
        .or(ensure_ascii)
        .unwrap_or(false);
    let indent = kwargs
        .get::<Option<Value>>("indent")?
        .or(indent)
        .filter(|v| !v.is_none());
    let separators = kwargs
        .get::<Option<Value>>("separators")?
        .or(separators)
        .filter(|v| !v.is_none());
    let sort_keys = kwargs
        .get::<Option<bool>>("sort_keys")?
        .or(sort_keys)
        .unwrap_or(false);
    kwargs.assert_all_used()?;

    let indent = match indent {
        None => None,
        Some(v) if v.kind() == ValueKind::String => {
            Some(v.as_str().unwrap_or_default().to_string())
        }
        Some(v) => match v.as_i64() {
            Some(n) if n > MAX_PADDING => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("indent {n} is over {MAX_PADDING}"),
                ))
            }
            Some(n) => Some(" ".repeat(n.max(0) as usize)),
            None => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "indent must be an int or a string",
                ))
            }
        },
    };
    let (item_separator, key_separator) = match separators {
        Some(v) => {
            let parts: Vec<Value> = v.try_iter()?.collect();
            match parts.as_slice() {
                [a, b] if a.as_str().is_some() && b.as_str().is_some() => (
                    a.as_str().unwrap().to_string(),
                    b.as_str().unwrap().to_string(),
                ),
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "separators must be a pair of strings",
                    ))
                }
            }
        }
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let opts = pyfmt::JsonOptions {
        ensure_ascii,
        indent,
        item_separator,
        key_separator,
        sort_keys,
    };
    pyfmt::py_json_dumps(value, &opts).map(Value::from)
}

/// transformers supports `{% generation %}...{% endgeneration %}` (marks
/// assistant text for training masks; renders its body unchanged). minijinja
/// has no custom tags, so both become an `if true` block, which keeps the
/// tags' whitespace control (`-`, `+`, trim/lstrip_blocks) identical.
fn rewrite_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(pos) = rest.find("{%") {
        out.push_str(&rest[..pos]);
        let tag = &rest[pos..];
        let mut i = 2;
        let bytes = tag.as_bytes();
        if i < bytes.len() && (bytes[i] == b'-' || bytes[i] == b'+') {
            i += 1;
        }
        let ws_start = i;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let word_start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        let word = &tag[word_start..i];
        let mut j = i;
        while j < bytes.len() && bytes[j].is_ascii_whitespace() {
            j += 1;
        }
        if j < bytes.len() && (bytes[j] == b'-' || bytes[j] == b'+') {
            j += 1;
        }
        let closes = tag[j..].starts_with("%}");
        let replacement = match word {
            "generation" if closes => Some("if true"),
            "endgeneration" if closes => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => {
                out.push_str(&tag[..ws_start]);
                out.push_str(&tag[ws_start..word_start]);
                out.push_str(r);
                rest = &tag[i..];
            }
            None => {
                out.push_str("{%");
                rest = &tag[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

const RENDER_FUEL: u64 = 20_000_000;

fn new_environment() -> Environment<'static> {
    let mut env = Environment::new();
    // Jinja2 builtins minijinja lacks: cycler, joiner, striptags,
    // filesizeformat (and contrib's pluralize, which Jinja2 lacks).
    minijinja_contrib::add_to_environment(&mut env);
    // Jinja2's cycler takes the items as arguments, contrib's as one list.
    env.add_function("cycler", |items: Rest<Value>| {
        minijinja_contrib::globals::cycler(items.0)
    });
    // transformers: ImmutableSandboxedEnvironment(trim_blocks=True,
    // lstrip_blocks=True); Jinja2 drops one trailing newline by default.
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .expect("default delimiters are valid"),
    );
    // Jinja2's default Undefined: prints as "", is false, iterates as empty,
    // `is defined` works; an attribute of an undefined value is an error.
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    // Short error messages (no source dumps), also in debug builds.
    env.set_debug(false);
    // Instructions one render may run: a conversation of the 1024 messages a
    // request may hold takes a few hundred thousand in the templates models
    // ship; a template that loops for ever stops with an error in a second
    // or so.
    env.set_fuel(Some(RENDER_FUEL));
    env.set_unknown_method_callback(py_method);
    // {{ x }} prints Python's str(x): None, True, 1e-05, ['a', 1], {'k': 'v'}.
    env.set_formatter(|out, _state, value| {
        match value.as_str() {
            Some(s) if value.kind() == ValueKind::String => out.write_str(s),
            _ => out.write_str(&pyfmt::py_str(value)),
        }
        .map_err(Error::from)
    });
    env.add_filter("tojson", tojson_filter);
    env.add_filter("trim", trim_filter);
    env.add_filter("string", string_filter);
    // Jinja2: `none is iterable` is false (templates guard `tools | length`
    // with it); minijinja would iterate none as empty.
    env.add_test("iterable", |v: &Value| !v.is_none() && v.try_iter().is_ok());
    // Jinja2: anything with len() and [] is a sequence, strings and dicts too.
    env.add_test("sequence", |v: &Value| {
        matches!(
            v.kind(),
            ValueKind::Seq
                | ValueKind::String
                | ValueKind::Map
                | ValueKind::Bytes
                | ValueKind::Undefined
        )
    });
    env.add_filter("center", center_filter);
    env.add_filter("truncate", truncate_filter);
    env.add_filter("wordcount", wordcount_filter);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", |fmt: &str| strftime::strftime_now(fmt));
    env
}

/// A compiled chat template; immutable, shareable between threads.
pub struct LlorchChatTemplate {
    env: Environment<'static>,
}

fn syntax_error_message(err: &Error, source: &str) -> String {
    let detail = err
        .detail()
        .map(str::to_string)
        .unwrap_or_else(|| err.kind().to_string());
    match (err.line(), err.range()) {
        (Some(line), Some(range)) => {
            let start = range.start.min(source.len());
            let line_start = source[..start].rfind('\n').map_or(0, |p| p + 1);
            let column = source[line_start..start].chars().count() + 1;
            format!(
                "{}: {} at line {}, column {}",
                err.kind(),
                detail,
                line,
                column
            )
        }
        (Some(line), None) => format!("{}: {} at line {}", err.kind(), detail, line),
        _ => format!("{}: {}", err.kind(), detail),
    }
}

fn compile(source: &str) -> Result<LlorchChatTemplate, String> {
    let mut env = new_environment();
    let rewritten = rewrite_generation_tags(source);
    match env.add_template_owned(TEMPLATE_NAME, rewritten.clone()) {
        Ok(()) => Ok(LlorchChatTemplate { env }),
        Err(err) => Err(syntax_error_message(&err, &rewritten)),
    }
}

fn json_to_value(json: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match json {
        J::Null => Value::from(()),
        J::Bool(b) => Value::from(*b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        J::String(s) => Value::from(s.as_str()),
        J::Array(items) => Value::from(items.iter().map(json_to_value).collect::<Vec<_>>()),
        J::Object(map) => {
            Value::from_pairs(map.iter().map(|(k, v)| (k.as_str(), json_to_value(v))))
        }
    }
}

fn find_raised(err: &Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(raised) = e.downcast_ref::<RaisedException>() {
            return Some(raised.0.clone());
        }
        source = e.source();
    }
    None
}

fn render_error_message(err: &Error) -> String {
    let mut msg = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        msg.push_str(": ");
        msg.push_str(&e.to_string());
        source = e.source();
    }
    msg
}

fn render(template: &LlorchChatTemplate, context_json: &[u8]) -> (c_int, String) {
    let context: serde_json::Value = match serde_json::from_slice(context_json) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(_) => {
            return (
                LLORCH_CHAT_TEMPLATE_INVALID_INPUT,
                "context must be a JSON object".to_string(),
            )
        }
        Err(e) => {
            return (
                LLORCH_CHAT_TEMPLATE_INVALID_INPUT,
                format!("context is not valid JSON: {e}"),
            )
        }
    };
    let tmpl = match template.env.get_template(TEMPLATE_NAME) {
        Ok(t) => t,
        Err(e) => return (LLORCH_CHAT_TEMPLATE_INTERNAL_ERROR, e.to_string()),
    };
    match tmpl.render(json_to_value(&context)) {
        Ok(text) => (LLORCH_CHAT_TEMPLATE_OK, text),
        Err(err) => match find_raised(&err) {
            Some(message) => (LLORCH_CHAT_TEMPLATE_RAISED, message),
            None => (
                LLORCH_CHAT_TEMPLATE_RENDER_ERROR,
                render_error_message(&err),
            ),
        },
    }
}

/// Copies `bytes` into a malloc'd NUL-terminated buffer for C.
unsafe fn emit(bytes: &[u8], out: *mut *mut c_char, out_len: *mut usize) {
    if out.is_null() {
        return;
    }
    let buf = libc::malloc(bytes.len() + 1) as *mut u8;
    if buf.is_null() {
        *out = std::ptr::null_mut();
    } else {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf, bytes.len());
        *buf.add(bytes.len()) = 0;
        *out = buf as *mut c_char;
    }
    if !out_len.is_null() {
        *out_len = if buf.is_null() { 0 } else { bytes.len() };
    }
}

unsafe fn input_bytes<'a>(ptr: *const c_char, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        return if len == 0 { Some(&[]) } else { None };
    }
    Some(std::slice::from_raw_parts(ptr as *const u8, len))
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("chat template renderer panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("chat template renderer panicked: {s}")
    } else {
        "chat template renderer panicked".to_string()
    }
}

/// Compiles `source` (UTF-8, `source_len` bytes). On success stores a handle
/// in `*out_template` (release with `llorch_chat_template_destroy`); on
/// failure stores a message in `*err`/`*err_len` (release with
/// `llorch_chat_template_free`).
///
/// # Safety
/// Pointers must be valid for the given lengths; out pointers may be null
/// only where documented in chat_template_ffi.h.
#[no_mangle]
pub unsafe extern "C" fn llorch_chat_template_compile(
    source: *const c_char,
    source_len: usize,
    out_template: *mut *mut LlorchChatTemplate,
    err: *mut *mut c_char,
    err_len: *mut usize,
) -> c_int {
    let result = catch_unwind(AssertUnwindSafe(|| {
        if out_template.is_null() {
            return (
                LLORCH_CHAT_TEMPLATE_INVALID_INPUT,
                "out_template is null".to_string(),
            );
        }
        *out_template = std::ptr::null_mut();
        let Some(bytes) = input_bytes(source, source_len) else {
            return (
                LLORCH_CHAT_TEMPLATE_INVALID_INPUT,
                "template source is null".to_string(),
            );
        };
        let Ok(text) = std::str::from_utf8(bytes) else {
            return (
                LLORCH_CHAT_TEMPLATE_SYNTAX_ERROR,
                "template is not valid UTF-8".to_string(),
            );
        };
        match compile(text) {
            Ok(t) => {
                *out_template = Box::into_raw(Box::new(t));
                (LLORCH_CHAT_TEMPLATE_OK, String::new())
            }
            Err(msg) => (LLORCH_CHAT_TEMPLATE_SYNTAX_ERROR, msg),
        }
    }));
    let (code, msg) =
        result.unwrap_or_else(|p| (LLORCH_CHAT_TEMPLATE_INTERNAL_ERROR, panic_message(p)));
    if code != LLORCH_CHAT_TEMPLATE_OK {
        emit(msg.as_bytes(), err, err_len);
    }
    code
}

/// Renders with `context_json` (a JSON object: messages,
/// add_generation_prompt, bos_token, eos_token, any extra variables). On
/// success `*out` is the text, otherwise the error message; either way
/// release it with `llorch_chat_template_free`.
///
/// # Safety
/// `template` must come from `llorch_chat_template_compile`; pointers must be
/// valid for the given lengths.
#[no_mangle]
pub unsafe extern "C" fn llorch_chat_template_render(
    template: *const LlorchChatTemplate,
    context_json: *const c_char,
    context_len: usize,
    out: *mut *mut c_char,
    out_len: *mut usize,
) -> c_int {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let Some(template) = template.as_ref() else {
            return (
                LLORCH_CHAT_TEMPLATE_INVALID_INPUT,
                "template is null".to_string(),
            );
        };
        let Some(bytes) = input_bytes(context_json, context_len) else {
            return (
                LLORCH_CHAT_TEMPLATE_INVALID_INPUT,
                "context is null".to_string(),
            );
        };
        render(template, bytes)
    }));
    let (code, text) =
        result.unwrap_or_else(|p| (LLORCH_CHAT_TEMPLATE_INTERNAL_ERROR, panic_message(p)));
    emit(text.as_bytes(), out, out_len);
    code
}

/// # Safety
/// `template` must come from `llorch_chat_template_compile` (or be null).
#[no_mangle]
pub unsafe extern "C" fn llorch_chat_template_destroy(template: *mut LlorchChatTemplate) {
    if !template.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(template))));
    }
}

/// # Safety
/// `s` must be a string returned by this library (or null).
#[no_mangle]
pub unsafe extern "C" fn llorch_chat_template_free(s: *mut c_char) {
    if !s.is_null() {
        libc::free(s as *mut libc::c_void);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_str(source: &str, ctx: serde_json::Value) -> (c_int, String) {
        let t = compile(source).expect("compiles");
        render(&t, ctx.to_string().as_bytes())
    }

    #[test]
    fn python_compatible_output() {
        let ctx = serde_json::json!({"x": [1, "a", null, true, 0.5], "m": {"b": 1, "a": 2}});
        assert_eq!(
            render_str("{{ x }}|{{ none }}|{{ true }}", ctx.clone()).1,
            "[1, 'a', None, True, 0.5]|None|True"
        );
        assert_eq!(
            render_str("{{ m | tojson }}", ctx.clone()).1,
            "{\"b\": 1, \"a\": 2}"
        );
        assert_eq!(
            render_str("{{ m | tojson(indent=2) }}", ctx.clone()).1,
            "{\n  \"b\": 1,\n  \"a\": 2\n}"
        );
        assert_eq!(render_str("{{ '<é>' | tojson }}", ctx.clone()).1, "\"<é>\"");
        assert_eq!(
            render_str("{{ '  a\x1c ' | trim }}|{{ ' b '.strip() }}", ctx.clone()).1,
            "a|b"
        );
        assert_eq!(
            render_str(
                "{% for k, v in m.items() %}{{ k }}={{ v }};{% endfor %}",
                ctx.clone()
            )
            .1,
            "b=1;a=2;"
        );
        assert_eq!(
            render_str("{{ none is iterable }}{{ x is iterable }}{{ 's' is iterable }}{{ u is iterable }}{{ 1 is iterable }}", ctx).1,
            "FalseTrueTrueTrueFalse"
        );
    }

    #[test]
    fn templates_cannot_exhaust_the_process() {
        let ctx = serde_json::json!({"m": [1]});
        for source in [
            "{{ 'x' | center(100000000000) }}",
            "{{ m | tojson(indent=100000000000) }}",
            "{% for i in range(10000) %}{% for j in range(10000) %}{% for k in range(10000) %}\
             {% endfor %}{% endfor %}{% endfor %}",
        ] {
            let start = std::time::Instant::now();
            let (code, msg) = render_str(source, ctx.clone());
            assert_eq!(code, LLORCH_CHAT_TEMPLATE_RENDER_ERROR, "{source}: {msg}");
            assert!(start.elapsed().as_secs() < 20, "{source}: {:?}", start.elapsed());
        }
        assert_eq!(render_str("{{ 'ab' | center(6) }}", ctx.clone()).1, "  ab  ");
    }

    #[test]
    fn raise_exception_is_distinguished() {
        let (code, msg) = render_str("{{ raise_exception('nope') }}", serde_json::json!({}));
        assert_eq!(code, LLORCH_CHAT_TEMPLATE_RAISED);
        assert_eq!(msg, "nope");
        let (code, _) = render_str("{{ x.y.z }}", serde_json::json!({}));
        assert_eq!(code, LLORCH_CHAT_TEMPLATE_RENDER_ERROR);
    }

    #[test]
    fn generation_tags_render_their_body() {
        let (code, text) = render_str(
            "a\n{% generation %}\nb\n{%- endgeneration %}\nc",
            serde_json::json!({}),
        );
        assert_eq!(code, LLORCH_CHAT_TEMPLATE_OK);
        assert_eq!(text, "a\nbc");
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let err = compile("ok\n{% if x %}").err().unwrap();
        assert!(err.contains("line 2"), "{err}");
    }
}
