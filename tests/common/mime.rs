//! Byte-level helpers for looking at messages the sink received: the trace
//! field the gateway prepends, header fields (RFC 5322 §2.2, unfolded), the
//! parts of a multipart body (RFC 2046 §5.1.1) kept byte for byte, and the
//! wire form of a message (CRLF line ends, RFC 5321 §2.3.8).

use std::fmt::Write as _;

/// Position of the first occurrence of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Printable form of bytes for failure messages: CR, LF, tabs and non-ASCII
/// are escaped so that bare line ends are visible.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n\n    "),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

/// None if equal, else a one-line account of where `got` and `want` differ.
pub fn diff_summary(got: &[u8], want: &[u8]) -> Option<String> {
    if got == want {
        return None;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let from = at.saturating_sub(30);
    Some(format!(
        "{} bytes vs {} expected, first difference at {at}: got ...{}... want ...{}...",
        got.len(),
        want.len(),
        escape(&got[from..(at + 30).min(got.len())]).replace("\\n\n    ", "\\n"),
        escape(&want[from..(at + 30).min(want.len())]).replace("\\n\n    ", "\\n"),
    ))
}

/// Panics with both sides escaped unless `got == want`.
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: bytes differ at offset {at} (got {} bytes, want {})\n\
             --- got:\n    {}\n--- want:\n    {}",
            got.len(),
            want.len(),
            escape(got),
            escape(want)
        );
    }
}

/// The wire form of a message as an SMTP client sends it and a gateway that
/// normalises line ends stores it: every bare CR or bare LF becomes CRLF,
/// and the data ends with CRLF.
pub fn wire_form(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 64);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Panics if `data` holds a CR not followed by LF or an LF not preceded by CR.
pub fn assert_crlf_only(data: &[u8], what: &str) {
    for (i, &b) in data.iter().enumerate() {
        let bare_cr = b == b'\r' && data.get(i + 1) != Some(&b'\n');
        let bare_lf = b == b'\n' && (i == 0 || data[i - 1] != b'\r');
        if bare_cr || bare_lf {
            let from = i.saturating_sub(40);
            panic!(
                "{what}: bare {} at offset {i}: ...{}",
                if bare_cr { "CR" } else { "LF" },
                escape(&data[from..(i + 40).min(data.len())])
            );
        }
    }
}

/// Length of the header field that starts at `data[0]`: its first line and
/// every continuation line (starting with SP or HTAB), CRLFs included.
pub fn field_len(data: &[u8]) -> usize {
    let mut pos = 0;
    loop {
        match find(&data[pos..], b"\r\n") {
            None => return data.len(),
            Some(i) => {
                pos += i + 2;
                if !matches!(data.get(pos), Some(b' ') | Some(b'\t')) {
                    return pos;
                }
            }
        }
    }
}

/// Splits off the header field named `name` that must start the data (the
/// trace field or direction header the gateway prepends), returning the
/// field (folded lines and final CRLF included) and the rest.
pub fn split_leading_field<'a>(data: &'a [u8], name: &str) -> (&'a [u8], &'a [u8]) {
    let prefix = format!("{name}:");
    let starts =
        data.len() >= prefix.len() && data[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes());
    assert!(
        starts,
        "expected the data to start with a {name}: field, got:\n    {}",
        escape(&data[..data.len().min(400)])
    );
    data.split_at(field_len(data))
}

/// Splits off the one `Received:` field the gateway prepends.
pub fn split_received(data: &[u8]) -> (&[u8], &[u8]) {
    split_leading_field(data, "Received")
}

/// The header block of a message (up to, not including, the empty line).
pub fn header_block(data: &[u8]) -> &[u8] {
    if data.starts_with(b"\r\n") {
        return &[];
    }
    match find(data, b"\r\n\r\n") {
        Some(i) => &data[..i + 2],
        None => data,
    }
}

/// The body of a message (after the empty line), empty if there is none.
pub fn body(data: &[u8]) -> &[u8] {
    if let Some(rest) = data.strip_prefix(b"\r\n") {
        return rest;
    }
    match find(data, b"\r\n\r\n") {
        Some(i) => &data[i + 4..],
        None => &[],
    }
}

/// Every header field of the message as (name, unfolded value), in order.
pub fn headers(data: &[u8]) -> Vec<(String, String)> {
    let block = header_block(data);
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < block.len() {
        let len = field_len(&block[pos..]);
        let field = String::from_utf8_lossy(&block[pos..pos + len]);
        pos += len;
        if let Some((name, value)) = field.split_once(':') {
            let unfolded = value.replace("\r\n", "");
            out.push((name.trim().to_string(), unfolded.trim().to_string()));
        }
    }
    out
}

/// The unfolded value of the first field called `name` (case-insensitive).
pub fn header(data: &[u8], name: &str) -> Option<String> {
    headers(data)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// A parameter of a structured header value such as Content-Type.
pub fn param(value: &str, name: &str) -> Option<String> {
    for piece in value.split(';').skip(1) {
        let Some((k, v)) = piece.split_once('=') else {
            continue;
        };
        if k.trim().eq_ignore_ascii_case(name) {
            return Some(v.trim().trim_matches('"').to_string());
        }
    }
    None
}

/// One body part of a multipart entity, bytes exactly as they stand.
#[derive(Clone, Debug)]
pub struct Part {
    pub header: Vec<u8>,
    pub body: Vec<u8>,
}

impl Part {
    pub fn header(&self, name: &str) -> Option<String> {
        header(&[self.header.as_slice(), b"\r\n"].concat(), name)
    }
}

/// The parts of a multipart message, per RFC 2046 §5.1.1: the CRLF before a
/// delimiter line belongs to the delimiter, so each part's body is exactly
/// what stood between its empty line and that CRLF.
pub fn multipart_parts(data: &[u8]) -> Vec<Part> {
    let ctype = header(data, "Content-Type").expect("message has a Content-Type field");
    let boundary = param(&ctype, "boundary").expect("multipart Content-Type has a boundary");
    let delimiter = format!("--{boundary}");
    let body = body(data);

    // Offsets of every line that starts with the delimiter.
    let mut starts = Vec::new();
    let mut pos = 0;
    while let Some(i) = find(&body[pos..], delimiter.as_bytes()) {
        let at = pos + i;
        if at == 0 || body[..at].ends_with(b"\r\n") {
            starts.push(at);
        }
        pos = at + delimiter.len();
    }

    let mut parts = Vec::new();
    for pair in starts.windows(2) {
        let (open, close) = (pair[0], pair[1]);
        if body[open + delimiter.len()..].starts_with(b"--") {
            break;
        }
        let line_end = open + find(&body[open..], b"\r\n").expect("delimiter line ends") + 2;
        let end = close.saturating_sub(2).max(line_end);
        let entity = &body[line_end..end];
        let (header, part_body) = if entity.starts_with(b"\r\n") {
            (Vec::new(), entity[2..].to_vec())
        } else {
            match find(entity, b"\r\n\r\n") {
                Some(i) => (entity[..i + 2].to_vec(), entity[i + 4..].to_vec()),
                None => (entity.to_vec(), Vec::new()),
            }
        };
        parts.push(Part {
            header,
            body: part_body,
        });
    }
    parts
}
