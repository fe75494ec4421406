//! Raw access to the top-level header block of a message (RFC 5322 §2.2).
//!
//! The relay never rewrites a message, so it needs only to find a few fields
//! as written: the journal markers, the subject as sent, the `Received:`
//! count for loop detection. Decoding (encoded words, address lists) is left
//! to `mail-parser`, in [`crate::report`].

/// Iterates the fields of the top-level header block as `(name, raw value)`;
/// the raw value keeps its folding and ends before the field's last CRLF.
pub fn fields(message: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    FieldIter { rest: message }
}

/// The raw value of the first field called `name` (compared without case).
pub fn first<'a>(message: &'a [u8], name: &str) -> Option<&'a [u8]> {
    fields(message)
        .find(|(field, _)| field.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, value)| value)
}

/// How many fields are called `name`.
pub fn count(message: &[u8], name: &str) -> usize {
    fields(message)
        .filter(|(field, _)| field.eq_ignore_ascii_case(name.as_bytes()))
        .count()
}

struct FieldIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for FieldIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line_end = find_field_end(self.rest)?;
            let field = &self.rest[..line_end.content];
            self.rest = &self.rest[line_end.next..];
            if field.is_empty() {
                // The empty line: the body starts here.
                self.rest = &[];
                return None;
            }

            let Some(colon) = field.iter().position(|&b| b == b':') else {
                // Not a field (a mbox "From " line or junk): skip it.
                continue;
            };
            let name = trim(&field[..colon]);
            let value = &field[colon + 1..];
            return Some((name, value));
        }
    }
}

struct FieldEnd {
    content: usize,
    next: usize,
}

/// Finds where the field starting at `data` ends: at a line break that is not
/// followed by a space or tab (folding, RFC 5322 §2.2.3).
fn find_field_end(data: &[u8]) -> Option<FieldEnd> {
    if data.is_empty() {
        return None;
    }
    let mut pos = 0;
    loop {
        let Some(lf) = data[pos..].iter().position(|&b| b == b'\n') else {
            return Some(FieldEnd {
                content: data.len(),
                next: data.len(),
            });
        };
        let lf = pos + lf;
        let content = if lf > 0 && data[lf - 1] == b'\r' {
            lf - 1
        } else {
            lf
        };
        let next = lf + 1;
        let is_empty_line = content == 0;
        let folded = !is_empty_line && matches!(data.get(next), Some(b' ') | Some(b'\t'));
        if !folded {
            return Some(FieldEnd { content, next });
        }
        pos = next;
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"Received: from a\r\n\tby b\r\nSUBJECT: Hello\r\n  world\r\n\
        X-Empty:\r\n\r\nSubject: not a header\r\n";

    #[test]
    fn folded_fields_are_returned_whole() {
        let all: Vec<_> = fields(MESSAGE).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0], (&b"Received"[..], &b" from a\r\n\tby b"[..]));
        assert_eq!(first(MESSAGE, "subject"), Some(&b" Hello\r\n  world"[..]));
        assert_eq!(first(MESSAGE, "x-empty"), Some(&b""[..]));
    }

    #[test]
    fn the_body_is_not_searched() {
        assert_eq!(count(MESSAGE, "Subject"), 1);
        assert_eq!(first(b"\r\nSubject: x\r\n", "Subject"), None);
    }

    #[test]
    fn bare_lf_messages_work_too() {
        assert_eq!(first(b"A: 1\nB: 2\n\nbody\n", "b"), Some(&b" 2"[..]));
    }
}
