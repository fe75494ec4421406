//! Journal copies as they go on the wire (product contract §5).
//!
//! Two formats. `copy` is the original, untouched, behind an
//! `X-Mailjournal-Direction:` field. `envelope` is laid out like the envelope
//! journal reports of Exchange, because archivers already read that layout:
//! a `multipart/mixed` report whose first part lists the envelope in
//! `Field: value` lines and whose second part is the original, byte for byte,
//! as `message/rfc822` (RFC 2046 §5.2.1).

use std::fmt::Write as _;

use mail_parser::MessageParser;
use serde::{Deserialize, Serialize};

use crate::address::{Address, ReversePath};
use crate::headers;
use crate::journal::Direction;

/// Field that marks a journal copy of the `copy` format.
pub const DIRECTION_FIELD: &str = "X-Mailjournal-Direction";

/// Field that marks an envelope journal report, as Exchange marks its own.
pub const REPORT_FIELD: &str = "X-MS-Journal-Report";

/// The format of journal copies (`journal.format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalFormat {
    /// An Exchange-style envelope journal report around the original.
    #[default]
    Envelope,
    /// The original with a direction field prepended.
    Copy,
}

/// One envelope recipient as the report lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportRecipient {
    /// The envelope recipient.
    pub address: Address,
    /// The group through which the recipient was reached, if any.
    pub expanded_from: Option<Address>,
}

/// What an envelope report is built from.
#[derive(Clone, Debug)]
pub struct ReportInput<'a> {
    /// Direction of the journaled message.
    pub direction: Direction,
    /// Envelope sender of the original.
    pub reverse_path: &'a ReversePath,
    /// Envelope recipients of the original, in order.
    pub recipients: &'a [ReportRecipient],
    /// `From:` of the report (`journal.report_sender`).
    pub report_sender: &'a Address,
    /// `To:` of the report: the journal targets.
    pub targets: &'a [Address],
    /// Our hostname, for the report's Message-ID.
    pub hostname: &'a str,
    /// Unique part of the report's Message-ID (the queue id serves).
    pub unique: &'a str,
    /// `Date:` of the report, already formatted per RFC 5322 §3.3.
    pub date: &'a str,
    /// The original message as relayed (trace field included).
    pub message: &'a [u8],
}

/// Builds the `copy` format: the direction field, then the original.
pub fn render_copy(direction: Direction, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 40);
    out.extend_from_slice(DIRECTION_FIELD.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(direction.as_str().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(message);
    out
}

/// Builds the `envelope` format: an envelope journal report.
pub fn render_envelope(input: &ReportInput<'_>) -> Vec<u8> {
    let original = MessageParser::new().parse_headers(input.message);
    let summary = summarise(input, original.as_ref());
    let boundary = pick_boundary(input.unique, input.message);

    // Header of the report. The subject is copied as written, so encoded
    // words stay encoded and nothing is decoded and re-encoded on the way.
    let mut out = Vec::with_capacity(input.message.len() + 1024);
    let subject = headers::first(input.message, "Subject").unwrap_or(b"");
    let mut head = String::new();
    let _ = write!(head, "From: {}\r\n", input.report_sender);
    let to: Vec<&str> = input.targets.iter().map(Address::as_str).collect();
    let _ = write!(head, "To: {}\r\n", to.join(",\r\n "));
    let _ = write!(head, "Date: {}\r\n", input.date);
    let _ = write!(
        head,
        "Message-ID: <{}.journal@{}>\r\n",
        input.unique, input.hostname
    );
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(b"Subject:");
    if subject.is_ascii() {
        if subject.is_empty() {
            out.push(b' ');
        }
        out.extend_from_slice(subject);
    } else {
        // Raw 8-bit in the original (SMTPUTF8, or a broken client): the
        // report's own header stays ASCII, as RFC 2047 encoded words.
        let decoded = original.as_ref().and_then(|m| m.subject()).unwrap_or("");
        out.push(b' ');
        out.extend_from_slice(encoded_words(&one_line(decoded)).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    let mut head = String::new();
    let _ = write!(head, "MIME-Version: 1.0\r\n");
    let _ = write!(
        head,
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n"
    );
    let _ = write!(head, "{REPORT_FIELD}:\r\n");
    let _ = write!(head, "{DIRECTION_FIELD}: {}\r\n", input.direction);
    let _ = write!(
        head,
        "\r\nThis is an envelope journal report in MIME format.\r\n"
    );
    out.extend_from_slice(head.as_bytes());

    // First part: the envelope, one field per line.
    let (encoding, text) = encode_text(&summary);
    let mut part = String::new();
    let _ = write!(part, "\r\n--{boundary}\r\n");
    let _ = write!(part, "Content-Type: text/plain; charset=utf-8\r\n");
    let _ = write!(part, "Content-Transfer-Encoding: {encoding}\r\n\r\n");
    out.extend_from_slice(part.as_bytes());
    out.extend_from_slice(&text);

    // Second part: the original, byte for byte. The CRLF before the closing
    // delimiter belongs to the delimiter (RFC 2046 §5.1.1), so the part's
    // body is exactly the message, its last CRLF included.
    let mut part = String::new();
    let _ = write!(part, "\r\n--{boundary}\r\n");
    // RFC 6532 §3.7: a message whose header is UTF-8 travels as message/global.
    let inner_type = if header_block(input.message).is_ascii() {
        "message/rfc822"
    } else {
        "message/global"
    };
    let _ = write!(part, "Content-Type: {inner_type}\r\n");
    let _ = write!(
        part,
        "Content-Transfer-Encoding: {}\r\n\r\n",
        transfer_encoding_of(input.message)
    );
    out.extend_from_slice(part.as_bytes());
    out.extend_from_slice(input.message);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// The lines of the report's first part, in the order §5 gives.
fn summarise(input: &ReportInput<'_>, original: Option<&mail_parser::Message<'_>>) -> String {
    let mut lines = String::new();

    match input.reverse_path {
        ReversePath::Null => lines.push_str("Sender: Unspecified Address\r\n"),
        ReversePath::Mailbox(address) => {
            let _ = write!(lines, "Sender: {address}\r\n");
        }
    }

    let from = original
        .and_then(|m| m.from())
        .and_then(|a| a.first())
        .and_then(|a| a.address());
    let sender = original
        .and_then(|m| m.sender())
        .and_then(|a| a.first())
        .and_then(|a| a.address());
    if let (Some(from), Some(sender)) = (from, sender) {
        if !from.eq_ignore_ascii_case(sender) {
            let _ = write!(lines, "On-Behalf-Of: {from}\r\n");
        }
    }

    let subject = original.and_then(|m| m.subject()).unwrap_or("");
    let _ = write!(lines, "Subject: {}\r\n", one_line(subject));
    match original.and_then(|m| m.message_id()) {
        Some(id) => {
            let _ = write!(lines, "Message-Id: <{}>\r\n", one_line(id));
        }
        None => lines.push_str("Message-Id: Unknown Message-ID\r\n"),
    }

    // Every To: and Cc: field counts (a message may carry several), and an
    // address matches in its unquoted form: `"bob@legacy"@example.net` in
    // the envelope is `bob@legacy@example.net` to a header parser.
    let listed = |field: mail_parser::HeaderName<'static>, address: &Address| {
        let wanted = address.unquoted_local();
        let domain = address.domain().unwrap_or("").to_ascii_lowercase();
        original.is_some_and(|m| {
            m.header_values(field.clone())
                .filter_map(|v| v.as_address())
                .flat_map(|list| list.iter())
                .filter_map(|a| a.address())
                .any(|a| match a.rsplit_once('@') {
                    Some((local, d)) => {
                        local.to_lowercase() == wanted && d.to_ascii_lowercase() == domain
                    }
                    None => false,
                })
        })
    };
    for recipient in input.recipients {
        let label = match input.direction {
            // Inbound header addressing comes from outside: not trusted.
            Direction::Inbound => "Recipient",
            Direction::Outbound if listed(mail_parser::HeaderName::To, &recipient.address) => "To",
            Direction::Outbound if listed(mail_parser::HeaderName::Cc, &recipient.address) => "Cc",
            Direction::Outbound => "Bcc",
        };
        let _ = write!(lines, "{label}: {}", recipient.address);
        if let Some(group) = &recipient.expanded_from {
            let _ = write!(lines, ", Expanded: {group}");
        }
        lines.push_str("\r\n");
    }
    lines
}

/// Folds a decoded value onto one line, so a hostile subject cannot add
/// fields to the report.
fn one_line(value: &str) -> String {
    value
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect()
}

/// 7bit when the text is ASCII, quoted-printable otherwise (§5).
fn encode_text(text: &str) -> (&'static str, Vec<u8>) {
    if text.is_ascii() {
        return ("7bit", text.as_bytes().to_vec());
    }
    let lines: Vec<String> = text
        .split("\r\n")
        .map(|line| quoted_printable::encode_to_str(line.as_bytes()))
        .collect();
    ("quoted-printable", lines.join("\r\n").into_bytes())
}

/// The header block of a message, up to its empty line.
pub fn header_block(message: &[u8]) -> &[u8] {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |p| p + 2);
    &message[..end]
}

/// A value as RFC 2047 encoded words (UTF-8, B encoding), each at most 75
/// characters, folded onto continuation lines.
fn encoded_words(text: &str) -> String {
    use base64::Engine as _;
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars() {
        // 45 octets of text make 60 of base64, inside the 75 of one word.
        if chunk.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(chunk);
    }
    words
        .iter()
        .map(|w| {
            format!(
                "=?utf-8?B?{}?=",
                base64::engine::general_purpose::STANDARD.encode(w)
            )
        })
        .collect::<Vec<_>>()
        .join("\r\n ")
}

/// RFC 2045 §6.2: 7bit for short ASCII lines, 8bit for short lines with
/// 8-bit octets, binary once any line passes 998 octets.
fn transfer_encoding_of(message: &[u8]) -> &'static str {
    let long_line = message.split(|&b| b == b'\n').any(|line| line.len() > 999);
    if long_line || message.contains(&0) {
        "binary"
    } else if message.is_ascii() {
        "7bit"
    } else {
        "8bit"
    }
}

/// A boundary that does not occur in the message (RFC 2046 §5.1.1).
fn pick_boundary(unique: &str, message: &[u8]) -> String {
    let mut attempt = 0u32;
    loop {
        let boundary = format!("=_journal_{unique}_{attempt}");
        let seen = message
            .windows(boundary.len())
            .any(|w| w == boundary.as_bytes());
        if !seen {
            return boundary;
        }
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Address {
        Address::parse(text, false).expect("test address")
    }

    const ORIGINAL: &[u8] = b"Received: from x by y; Thu, 3 Dec 2026 10:00:00 +0000\r\n\
        From: Alice <alice@example.com>\r\n\
        Sender: secretary@example.com\r\n\
        To: bob@example.net, Carol <carol@example.net>\r\n\
        Cc: dave@example.net\r\n\
        Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\
        Message-ID: <m1@example.com>\r\n\
        \r\n\
        Hello.\r\n";

    fn render(direction: Direction, recipients: &[&str], message: &[u8]) -> Vec<u8> {
        let recipients: Vec<ReportRecipient> = recipients
            .iter()
            .map(|r| ReportRecipient {
                address: addr(r),
                expanded_from: None,
            })
            .collect();
        let reverse_path = ReversePath::Mailbox(addr("alice@example.com"));
        render_envelope(&ReportInput {
            direction,
            reverse_path: &reverse_path,
            recipients: &recipients,
            report_sender: &addr("journal-reports@example.com"),
            targets: &[addr("journal@example.com")],
            hostname: "gw.example.com",
            unique: "Q1",
            date: "Thu, 3 Dec 2026 10:00:01 +0000",
            message,
        })
    }

    #[test]
    fn outbound_reports_place_each_recipient_by_its_header() {
        let report = render(
            Direction::Outbound,
            &[
                "bob@example.net",
                "CAROL@example.net",
                "dave@example.net",
                "eve@example.net",
            ],
            ORIGINAL,
        );
        let text = String::from_utf8_lossy(&report);
        assert!(text.contains("X-MS-Journal-Report:\r\n"));
        assert!(text.contains("Message-ID: <Q1.journal@gw.example.com>\r\n"));
        assert!(text.contains("Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"));
        assert!(text.contains("Content-Transfer-Encoding: quoted-printable"));
        let expected = "Sender: alice@example.com\r\n\
            On-Behalf-Of: alice@example.com\r\n\
            Subject: Gr=C3=BC=C3=9Fe\r\n\
            Message-Id: <m1@example.com>\r\n\
            To: bob@example.net\r\n\
            To: CAROL@example.net\r\n\
            Cc: dave@example.net\r\n\
            Bcc: eve@example.net\r\n";
        assert!(text.contains(expected), "report was:\n{text}");
    }

    #[test]
    fn quoted_recipients_and_repeated_fields_are_placed_right() {
        let message = b"From: a@example.com\r\nTo: \"bob@legacy\"@example.net\r\n\
            To: carol@example.net\r\nCc: dave@example.net\r\nCc: erin@example.net\r\n\
            Subject: s\r\n\r\nx\r\n";
        let report = render(
            Direction::Outbound,
            &[
                "\"bob@legacy\"@example.net",
                "carol@example.net",
                "dave@example.net",
                "erin@example.net",
            ],
            message,
        );
        let text = String::from_utf8_lossy(&report);
        for line in [
            "To: \"bob@legacy\"@example.net\r\n",
            "To: carol@example.net\r\n",
            "Cc: dave@example.net\r\n",
            "Cc: erin@example.net\r\n",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
    }

    #[test]
    fn utf8_headers_make_an_ascii_report_around_message_global() {
        let message = "From: j\u{f6}s\u{e9}@ex\u{e4}mple.net\r\n\
            Subject: \u{fc}tf gr\u{fc}\u{df}e\r\n\r\nx\r\n";
        let report = render(Direction::Inbound, &["bob@example.net"], message.as_bytes());
        let head = header_block(&report);
        assert!(head.is_ascii(), "{}", String::from_utf8_lossy(head));
        let text = String::from_utf8_lossy(&report);
        assert!(
            text.contains("Subject: =?utf-8?B?w7x0ZiBncsO8w59l?=\r\n"),
            "{text}"
        );
        assert!(text.contains("Content-Type: message/global\r\n"), "{text}");
        assert!(
            text.contains("Content-Transfer-Encoding: 8bit\r\n"),
            "{text}"
        );
    }

    #[test]
    fn inbound_reports_do_not_trust_header_addressing() {
        let report = render(Direction::Inbound, &["bob@example.net"], ORIGINAL);
        let text = String::from_utf8_lossy(&report);
        assert!(text.contains("Recipient: bob@example.net\r\n"));
        assert!(!text.contains("To: bob@example.net\r\n"));
    }

    #[test]
    fn the_original_stands_byte_for_byte_before_the_closing_delimiter() {
        let report = render(Direction::Inbound, &["bob@example.net"], ORIGINAL);
        let closing = b"\r\n--=_journal_Q1_0--\r\n";
        assert!(report.ends_with(closing));
        let body = &report[..report.len() - closing.len()];
        assert!(body.ends_with(ORIGINAL));
        let before = &body[..body.len() - ORIGINAL.len()];
        assert!(before
            .ends_with(b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"));
    }

    #[test]
    fn a_message_without_headers_still_gets_a_report() {
        let report = render(Direction::Inbound, &["bob@example.net"], b"\r\n");
        let text = String::from_utf8_lossy(&report);
        assert!(text.contains("Message-Id: Unknown Message-ID\r\n"));
        assert!(text.contains("Subject: \r\n"));
    }

    #[test]
    fn a_boundary_found_in_the_message_is_not_used() {
        let message = b"Subject: x\r\n\r\n--=_journal_Q1_0\r\n";
        let report = render(Direction::Inbound, &["bob@example.net"], message);
        let text = String::from_utf8_lossy(&report);
        assert!(text.contains("boundary=\"=_journal_Q1_1\""));
    }

    #[test]
    fn copies_prepend_only_the_direction_field() {
        let copy = render_copy(Direction::Outbound, ORIGINAL);
        assert_eq!(&copy[..35], b"X-Mailjournal-Direction: outbound\r\n");
        assert_eq!(&copy[35..], ORIGINAL);
    }
}
