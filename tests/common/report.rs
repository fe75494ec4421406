//! Reading an envelope journal report (`format = "envelope"`) the way an
//! archiver does: the Exchange layout of PRODUCT.md §5, a `multipart/mixed`
//! whose first part lists the envelope one field per line and whose second
//! part is the original as `message/rfc822`, byte for byte.

use std::path::Path;
use std::process::Command;

use super::mime::{self, escape, Part};

#[derive(Clone, Debug)]
pub struct EnvelopeReport {
    /// The whole report as the sink received it.
    pub data: Vec<u8>,
    /// The lines of the first (text/plain) part, decoded, empty lines dropped.
    pub fields: Vec<String>,
    /// The body of the message/rfc822 part, exactly as it stands.
    pub embedded: Vec<u8>,
    pub parts: Vec<Part>,
}

impl EnvelopeReport {
    /// Parses a report and checks its outer structure, panicking with the
    /// report's text when it is not an envelope journal report.
    pub fn parse(data: &[u8]) -> EnvelopeReport {
        let show = || escape(&data[..data.len().min(3000)]);
        let ctype = mime::header(data, "Content-Type")
            .unwrap_or_else(|| panic!("report without Content-Type:\n    {}", show()));
        assert!(
            ctype.to_ascii_lowercase().starts_with("multipart/mixed"),
            "report Content-Type is {ctype:?}, want multipart/mixed:\n    {}",
            show()
        );
        let parts = mime::multipart_parts(data);
        assert_eq!(
            parts.len(),
            2,
            "report parts (want text + message/rfc822):\n    {}",
            show()
        );

        let text_type = parts[0]
            .header("Content-Type")
            .unwrap_or_else(|| "text/plain".into());
        assert!(
            text_type.to_ascii_lowercase().starts_with("text/plain"),
            "first part is {text_type:?}, want text/plain"
        );
        let cte = parts[0]
            .header("Content-Transfer-Encoding")
            .unwrap_or_default();
        let text = if cte.eq_ignore_ascii_case("quoted-printable") {
            decode_qp(&parts[0].body)
        } else {
            assert!(
                cte.is_empty() || ["7bit", "8bit"].iter().any(|e| cte.eq_ignore_ascii_case(e)),
                "unexpected Content-Transfer-Encoding {cte:?} of the text part"
            );
            parts[0].body.clone()
        };
        let fields = String::from_utf8_lossy(&text)
            .split("\r\n")
            .map(str::to_string)
            .filter(|l| !l.trim().is_empty())
            .collect();

        let embedded_type = parts[1].header("Content-Type").unwrap_or_default();
        assert!(
            embedded_type
                .to_ascii_lowercase()
                .starts_with("message/rfc822"),
            "second part is {embedded_type:?}, want message/rfc822"
        );
        let cte = parts[1]
            .header("Content-Transfer-Encoding")
            .unwrap_or_default();
        assert!(
            cte.is_empty()
                || ["7bit", "8bit", "binary"]
                    .iter()
                    .any(|e| cte.eq_ignore_ascii_case(e)),
            "message/rfc822 part must not be encoded (RFC 2046 §5.2.1), has {cte:?}"
        );
        let embedded = parts[1].body.clone();
        EnvelopeReport {
            data: data.to_vec(),
            fields,
            embedded,
            parts,
        }
    }

    pub fn header(&self, name: &str) -> Option<String> {
        mime::header(&self.data, name)
    }

    /// The envelope lines of the text part (`Sender:`, `Subject:`, ...).
    pub fn field_lines(&self) -> Vec<&str> {
        self.fields.iter().map(String::as_str).collect()
    }

    /// Checks the report's header fields: the empty `X-MS-Journal-Report:`,
    /// `From:` the report sender, `Subject:` the original one, and a fresh
    /// Message-ID in our host name.
    pub fn assert_headers(&self, report_sender: &str, subject: Option<&str>, hostname: &str) {
        let headers = mime::headers(&self.data);
        let has = |n: &str| headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(n));
        assert!(
            has("X-MS-Journal-Report"),
            "no X-MS-Journal-Report field: {headers:#?}"
        );
        let from = self.header("From").expect("report has From:");
        assert!(
            from.to_ascii_lowercase()
                .contains(&report_sender.to_ascii_lowercase()),
            "report From: {from:?}, want {report_sender}"
        );
        if let Some(subject) = subject {
            assert_eq!(
                self.header("Subject").as_deref(),
                Some(subject),
                "report Subject:"
            );
        }
        let id = self.header("Message-ID").expect("report has Message-ID:");
        assert!(
            id.starts_with('<') && id.ends_with(&format!("@{hostname}>")),
            "report Message-ID {id:?} is not <...@{hostname}>"
        );
    }

    /// Asserts the embedded message ends with `original`, and that whatever
    /// precedes it is only header fields the gateway prepended (trace).
    pub fn assert_embeds(&self, original: &[u8]) {
        assert!(
            self.embedded.ends_with(original),
            "message/rfc822 part does not end with the original\n\
             --- embedded:\n    {}\n--- original:\n    {}",
            escape(&self.embedded),
            escape(original)
        );
        let prefix = &self.embedded[..self.embedded.len() - original.len()];
        let mut pos = 0;
        while pos < prefix.len() {
            let len = mime::field_len(&prefix[pos..]);
            let field = &prefix[pos..pos + len];
            let name_ok = field
                .iter()
                .position(|b| *b == b':')
                .is_some_and(|i| i > 0 && field[..i].iter().all(|b| b.is_ascii_graphic()));
            assert!(
                name_ok,
                "non-header bytes before the original: {}",
                escape(prefix)
            );
            pos += len;
        }
    }

    /// Runs `python3 tests/tools/parse_report.py REPORT ORIGINAL`, which an
    /// archiver-side parser uses to check the report; it must exit 0.
    pub fn check_with_python(&self, original: &[u8]) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let script = root.join("tests/tools/parse_report.py");
        assert!(script.exists(), "{} is missing", script.display());
        let dir = tempfile::tempdir().expect("temporary directory");
        let report_path = dir.path().join("report.eml");
        let original_path = dir.path().join("original.eml");
        std::fs::write(&report_path, &self.data).expect("write report");
        std::fs::write(&original_path, original).expect("write original");
        let out = Command::new("python3")
            .arg(&script)
            .arg(&report_path)
            .arg(&original_path)
            .current_dir(root)
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "parse_report.py exited {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Decodes quoted-printable (RFC 2045 §6.7), keeping CRLF line ends.
pub fn decode_qp(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'=' {
            if input[i + 1..].starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            if let (Some(h), Some(l)) = (
                input.get(i + 1).copied().and_then(hex),
                input.get(i + 2).copied().and_then(hex),
            ) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}
