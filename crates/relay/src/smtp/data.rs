//! The DATA phase: where a message ends, and what its bytes are.
//!
//! RFC 5321 §4.1.1.4 ends the data at CRLF "." CRLF and nowhere else. Bare
//! LF and bare CR are not line ends on the wire, and treating them as ends
//! lets one transaction smuggle a second one past filters that read the
//! stream differently (SMTP smuggling). This reader therefore:
//! - ends the message only at a "." line that follows a real CRLF and is
//!   itself ended by CRLF (the first line after DATA counts as following one);
//! - turns every bare LF and bare CR into CRLF (as Postfix's
//!   `smtpd_forbid_bare_newline = normalize` does), so the next hop and the
//!   journal copy get the same, unambiguous bytes;
//! - undoes dot-stuffing (§4.5.2) only at the start of a line that follows a
//!   real CRLF, so a "." after a bare LF stays content and is stuffed again
//!   on the way out;
//! - counts the size as it goes, stops storing past the limit, and reads on
//!   to the end so that the 552 reply comes at the right moment.

/// Longest partial line kept before its start is passed on.
const MAX_PENDING_LINE: usize = 64 * 1024;

/// What feeding bytes to the reader did.
#[derive(Debug, PartialEq, Eq)]
pub enum Feed {
    /// The end was not seen; `consumed` bytes were taken.
    More {
        /// Bytes of the input that were taken.
        consumed: usize,
    },
    /// The end was seen; `consumed` bytes were taken, terminator included.
    Done {
        /// Bytes of the input that were taken.
        consumed: usize,
    },
}

/// Reads one message of the DATA phase.
pub struct DataReader {
    message: Vec<u8>,
    limit: usize,
    size: usize,
    after_crlf: bool,
    mid_line: bool,
    normalised: bool,
}

impl DataReader {
    /// A reader that stores at most `limit` bytes.
    pub fn new(limit: usize) -> DataReader {
        DataReader {
            message: Vec::with_capacity(8192),
            limit,
            size: 0,
            after_crlf: true,
            mid_line: false,
            normalised: false,
        }
    }

    /// Whether the message grew past the limit.
    pub fn oversize(&self) -> bool {
        self.size > self.limit
    }

    /// Whether a bare LF or bare CR was turned into CRLF.
    pub fn normalised(&self) -> bool {
        self.normalised
    }

    /// The message (only meaningful when not oversize).
    pub fn into_message(self) -> Vec<u8> {
        self.message
    }

    /// Takes what it can of `input`.
    pub fn feed(&mut self, input: &[u8]) -> Feed {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            let Some(found) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
                // No line end yet. A very long line is passed on in pieces;
                // its start has been judged once its first bytes are seen.
                if rest.len() > MAX_PENDING_LINE {
                    let line = self.strip_stuffing(rest);
                    self.push(line);
                    self.mid_line = true;
                    return Feed::More {
                        consumed: input.len(),
                    };
                }
                return Feed::More { consumed: pos };
            };

            let (terminator_len, real_crlf) = match rest[found] {
                b'\n' => (1, false),
                _ => match rest.get(found + 1) {
                    Some(b'\n') => (2, true),
                    Some(_) => (1, false),
                    // A CR at the end of what we have: wait for the next byte.
                    None => return Feed::More { consumed: pos },
                },
            };

            let line = &rest[..found];
            if real_crlf && self.after_crlf && !self.mid_line && line == b"." {
                return Feed::Done {
                    consumed: pos + found + 2,
                };
            }

            let content = self.strip_stuffing(line);
            self.push(content);
            self.push(b"\r\n");
            self.normalised |= !real_crlf;
            self.after_crlf = real_crlf;
            self.mid_line = false;
            pos += found + terminator_len;
        }
    }

    /// Drops the stuffed dot of a line that starts after a real CRLF.
    fn strip_stuffing<'a>(&self, line: &'a [u8]) -> &'a [u8] {
        if self.after_crlf && !self.mid_line && line.len() > 1 && line[0] == b'.' {
            &line[1..]
        } else {
            line
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.size += bytes.len();
        if self.size <= self.limit {
            self.message.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `chunk` bytes, like a slow client.
    fn read(input: &[u8], chunk: usize) -> (Vec<u8>, usize, bool) {
        let mut reader = DataReader::new(1 << 20);
        let mut buffer = Vec::new();
        let mut taken = 0;
        for piece in input.chunks(chunk) {
            buffer.extend_from_slice(piece);
            match reader.feed(&buffer) {
                Feed::More { consumed } => {
                    buffer.drain(..consumed);
                    taken += consumed;
                }
                Feed::Done { consumed } => {
                    taken += consumed;
                    return (reader.into_message(), taken, true);
                }
            }
        }
        (reader.into_message(), taken, false)
    }

    fn read_all_ways(input: &[u8]) -> (Vec<u8>, usize, bool) {
        let whole = read(input, input.len().max(1));
        for chunk in [1, 2, 3, 7] {
            assert_eq!(read(input, chunk), whole, "chunk size {chunk}");
        }
        whole
    }

    #[test]
    fn only_crlf_dot_crlf_ends_the_message() {
        let input = b"Subject: a\r\n\r\nline\n.\r\nMAIL FROM:<x@y>\r\n.\r\nQUIT\r\n";
        let (message, taken, done) = read_all_ways(input);
        assert!(done);
        assert_eq!(&input[taken..], b"QUIT\r\n");
        assert_eq!(
            message,
            b"Subject: a\r\n\r\nline\r\n.\r\nMAIL FROM:<x@y>\r\n"
        );
    }

    #[test]
    fn lf_dot_lf_and_cr_dot_cr_do_not_end_the_message() {
        for input in [
            &b"a\n.\nb\r\n.\r\n"[..],
            &b"a\r.\rb\r\n.\r\n"[..],
            &b"a\r\n.\nb\r\n.\r\n"[..],
            &b"a\r.\r\nb\r\n.\r\n"[..],
        ] {
            let (message, taken, done) = read_all_ways(input);
            assert!(done, "{input:?}");
            assert_eq!(taken, input.len(), "{input:?}");
            assert!(message.ends_with(b"b\r\n"), "{input:?}");
            assert!(
                !message.contains(&b'\n')
                    || message
                        .windows(2)
                        .filter(|w| w[1] == b'\n')
                        .all(|w| w[0] == b'\r')
            );
        }
    }

    #[test]
    fn an_empty_message_ends_at_once() {
        let (message, taken, done) = read_all_ways(b".\r\nQUIT\r\n");
        assert!(done);
        assert_eq!(taken, 3);
        assert!(message.is_empty());
    }

    #[test]
    fn stuffed_dots_are_removed_even_on_the_first_line() {
        let (message, _, _) = read_all_ways(b"..first\r\nx\r\n..\r\n...\r\n.\r\n");
        assert_eq!(message, b".first\r\nx\r\n.\r\n..\r\n");
    }

    #[test]
    fn bare_line_ends_become_crlf() {
        let (message, _, _) = read_all_ways(b"a\nb\rc\r\n.\r\n");
        assert_eq!(message, b"a\r\nb\r\nc\r\n");
    }

    #[test]
    fn the_size_limit_keeps_reading_to_the_end() {
        let mut reader = DataReader::new(10);
        let input = b"0123456789abcdef\r\nmore\r\n.\r\nQUIT\r\n";
        assert_eq!(reader.feed(input), Feed::Done { consumed: 27 });
        assert!(reader.oversize());
    }

    #[test]
    fn very_long_lines_pass_in_pieces() {
        let mut input = vec![b'.'];
        input.extend(std::iter::repeat_n(b'x', 200_000));
        input.extend_from_slice(b"\r\n.\r\n");
        let (message, _, done) = read(&input, 10_000);
        assert!(done);
        assert_eq!(message.len(), 200_002);
        assert_eq!(message[0], b'x');
    }
}
