//! Delivery status notifications (RFC 3464, RFC 6522).
//!
//! A DSN goes from the null sender to the reverse path of the delivery that
//! failed: for an original that is its envelope sender, for a journal copy
//! the NDR address of its direction, so the original sender never learns of
//! journaling (product contract §4). It quotes the headers of what failed
//! (`text/rfc822-headers`), never the body.

use std::fmt::Write as _;

use policy::report::header_block;
use policy::Address;

/// One recipient that failed, for the report.
pub struct FailedRecipient<'a> {
    /// The recipient.
    pub address: &'a Address,
    /// The reply or reason, as the next hop or the queue gave it.
    pub reason: &'a str,
    /// Whether it failed because it stayed too long in the queue.
    pub expired: bool,
}

/// What a DSN is built from.
pub struct DsnInput<'a> {
    /// Our hostname: Reporting-MTA and the From: domain.
    pub hostname: &'a str,
    /// The DSN's own queue id, for its Message-ID.
    pub unique: &'a str,
    /// `Date:`, formatted per RFC 5322.
    pub date: &'a str,
    /// Who receives the DSN.
    pub to: &'a Address,
    /// The host name of the next hop that refused, for Remote-MTA (none for
    /// a local Maildir).
    pub remote_mta: Option<&'a str>,
    /// When the message arrived, per RFC 5322.
    pub arrival_date: &'a str,
    /// The recipients that failed.
    pub failed: &'a [FailedRecipient<'a>],
    /// The message that failed (only its header block is quoted).
    pub message: &'a [u8],
}

/// Builds the DSN message, CRLF throughout.
pub fn render(input: &DsnInput<'_>) -> Vec<u8> {
    let boundary = format!("=_dsn_{}", input.unique);
    let mut out = String::new();

    let _ = write!(
        out,
        "From: Mail Delivery System <MAILER-DAEMON@{}>\r\n",
        input.hostname
    );
    let _ = write!(out, "To: {}\r\n", input.to);
    let _ = write!(out, "Subject: Undelivered Mail Returned to Sender\r\n");
    let _ = write!(out, "Date: {}\r\n", input.date);
    let _ = write!(
        out,
        "Message-ID: <{}.dsn@{}>\r\n",
        input.unique, input.hostname
    );
    let _ = write!(out, "Auto-Submitted: auto-replied\r\n");
    let _ = write!(out, "MIME-Version: 1.0\r\n");
    let _ = write!(
        out,
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"{boundary}\"\r\n"
    );
    let _ = write!(
        out,
        "\r\nThis is a MIME-encapsulated delivery status notification.\r\n"
    );

    // Part 1: for people.
    let _ = write!(out, "\r\n--{boundary}\r\n");
    let _ = write!(out, "Content-Type: text/plain; charset=utf-8\r\n\r\n");
    let _ = write!(
        out,
        "This is the mail system at host {}.\r\n\r\n\
         Your message could not be delivered to one or more recipients.\r\n\r\n",
        input.hostname
    );
    for failed in input.failed {
        let _ = write!(out, "<{}>: {}\r\n", failed.address, one_line(failed.reason));
    }

    // Part 2: for machines (RFC 3464 §2.2, §2.3).
    let _ = write!(out, "\r\n--{boundary}\r\n");
    let _ = write!(out, "Content-Type: message/delivery-status\r\n\r\n");
    let _ = write!(out, "Reporting-MTA: dns; {}\r\n", input.hostname);
    let _ = write!(out, "Arrival-Date: {}\r\n", input.arrival_date);
    for failed in input.failed {
        let status = status_of(failed);
        let _ = write!(out, "\r\nFinal-Recipient: rfc822; {}\r\n", failed.address);
        let _ = write!(out, "Action: failed\r\n");
        let _ = write!(out, "Status: {status}\r\n");
        if !failed.expired {
            if let Some(host) = input.remote_mta {
                let _ = write!(out, "Remote-MTA: dns; {host}\r\n");
            }
            let _ = write!(
                out,
                "Diagnostic-Code: smtp; {}\r\n",
                one_line(failed.reason)
            );
        } else {
            let _ = write!(
                out,
                "Diagnostic-Code: X-mailjournal; {}\r\n",
                one_line(failed.reason)
            );
        }
    }

    // Part 3: the headers of what failed (RFC 6522 §3).
    let _ = write!(out, "\r\n--{boundary}\r\n");
    let _ = write!(out, "Content-Type: text/rfc822-headers\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(header_block(input.message));
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

/// The enhanced status code (RFC 3463) of a failure: from the reply when it
/// carries one, 4.4.7 for an expired delivery, 5.0.0 otherwise.
fn status_of(failed: &FailedRecipient<'_>) -> String {
    if failed.expired {
        return "4.4.7".into();
    }
    failed
        .reason
        .split_whitespace()
        .find(|word| {
            let parts: Vec<&str> = word.split('.').collect();
            parts.len() == 3
                && matches!(parts[0], "2" | "4" | "5")
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|s| {
            // A DSN is sent for a permanent failure: keep the class at 5.
            format!("5{}", &s[1..])
        })
        .unwrap_or_else(|| "5.0.0".into())
}

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dsn_names_each_failed_recipient_and_quotes_only_headers() {
        let to = Address::parse("alice@example.com", false).expect("address");
        let bob = Address::parse("bob@example.net", false).expect("address");
        let message = b"From: alice@example.com\r\nSubject: hi\r\n\r\nsecret body\r\n";
        let dsn = render(&DsnInput {
            hostname: "gw.example.com",
            unique: "ABC",
            date: "Thu, 3 Dec 2026 10:00:00 +0000",
            to: &to,
            remote_mta: Some("mx.example.net"),
            arrival_date: "Thu, 3 Dec 2026 09:00:00 +0000",
            failed: &[FailedRecipient {
                address: &bob,
                reason: "550 5.1.1 no such user",
                expired: false,
            }],
            message,
        });
        let text = String::from_utf8(dsn).expect("utf-8");
        assert!(text.contains("report-type=delivery-status"));
        assert!(text.contains("Final-Recipient: rfc822; bob@example.net\r\nAction: failed\r\n"));
        assert!(text.contains("Status: 5.1.1\r\n"));
        assert!(text.contains("Remote-MTA: dns; mx.example.net\r\n"));
        assert!(text.contains("Subject: hi\r\n"));
        assert!(!text.contains("secret body"));
    }

    #[test]
    fn expired_deliveries_report_4_4_7() {
        let bob = Address::parse("bob@example.net", false).expect("address");
        let failed = FailedRecipient {
            address: &bob,
            reason: "451 4.3.0 try later",
            expired: true,
        };
        assert_eq!(status_of(&failed), "4.4.7");
    }
}
