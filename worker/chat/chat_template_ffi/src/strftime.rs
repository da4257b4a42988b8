//! `strftime_now(fmt)`: Python's `datetime.now().strftime(fmt)`, which is
//! what transformers (>= 4.45) exposes to chat templates.
//!
//! Python formats a naive local datetime through the C library's strftime
//! after replacing `%f` (microseconds) and `%z`/`%Z` (empty for a naive
//! datetime) itself; doing the same through libc gives identical output.

use std::ffi::CString;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::{Error, ErrorKind};

/// Rewrites the directives Python's datetime handles itself.
fn python_prepass(fmt: &str, micros: u32) -> String {
    let mut out = String::with_capacity(fmt.len() + 8);
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            None => out.push('%'),
            Some('f') => out.push_str(&format!("{micros:06}")),
            Some('z') | Some('Z') => {}
            Some(other) => {
                out.push('%');
                out.push(other);
            }
        }
    }
    out
}

pub fn strftime_now(fmt: &str) -> Result<String, Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("clock error: {e}")))?;
    let format = python_prepass(fmt, now.subsec_micros());
    let c_format = CString::new(format.as_bytes())
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, "embedded null character"))?;
    let secs = now.as_secs() as libc::time_t;
    // SAFETY: localtime_r and strftime write only into the buffers given.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return Err(Error::new(ErrorKind::InvalidOperation, "localtime failed"));
        }
        // Like CPython: grow the buffer until the result fits; an empty result
        // is legitimate (e.g. an empty format) once the buffer is large.
        let mut size = 1024usize;
        loop {
            let mut buf = vec![0u8; size];
            let n = libc::strftime(buf.as_mut_ptr().cast(), size, c_format.as_ptr(), &tm);
            if n > 0 || size >= 256 * format.len().max(1) {
                buf.truncate(n);
                return Ok(String::from_utf8_lossy(&buf).into_owned());
            }
            size *= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepass() {
        assert_eq!(python_prepass("%d %b %Y", 5), "%d %b %Y");
        assert_eq!(python_prepass("%f|%z|%Z|%%|%", 42), "000042|||%%|%");
    }

    #[test]
    fn formats_year() {
        let year = strftime_now("%Y").unwrap();
        assert_eq!(year.len(), 4);
        assert!(year.starts_with("20"));
        assert_eq!(strftime_now("").unwrap(), "");
    }
}
