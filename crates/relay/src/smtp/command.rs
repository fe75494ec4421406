//! SMTP commands: `smtp-proto` parses, we keep the paths as written.
//!
//! `smtp-proto` reads the verb and the MAIL/RCPT parameters (SIZE, BODY,
//! SMTPUTF8, AUTH, ...). Its address handling is not used: it strips the
//! quotes of quoted local parts and turns `<>`, `<postmaster>` and
//! `<Postmaster>` all into an empty string, which would make a postmaster a
//! null sender. The path between the angle brackets is therefore cut out of
//! the raw line here and checked by [`policy::Address`].

use std::borrow::Cow;

use policy::{Address, ReversePath};
use smtp_proto::{
    Error as ProtoError, Request, MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_BY_NOTIFY,
    MAIL_BY_RETURN, MAIL_CONPERM, MAIL_REQUIRETLS, MAIL_RET_FULL, MAIL_RET_HDRS, MAIL_SMTPUTF8,
    RCPT_CONNEG, RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS,
};

/// MAIL parameters of extensions we do not offer (DSN, BINARYMIME, REQUIRETLS,
/// DELIVERBY, CONPERM): taking them silently would promise what we do not do.
const UNOFFERED_MAIL: u64 = MAIL_RET_FULL
    | MAIL_RET_HDRS
    | MAIL_BODY_BINARYMIME
    | MAIL_REQUIRETLS
    | MAIL_BY_NOTIFY
    | MAIL_BY_RETURN
    | MAIL_CONPERM;

/// RCPT parameters of extensions we do not offer (DSN NOTIFY, CONNEG).
const UNOFFERED_RCPT: u64 =
    RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY | RCPT_NOTIFY_NEVER | RCPT_CONNEG;

/// What stands in for the path when smtp-proto reads the parameters.
const PLACEHOLDER: &str = "placeholder@mailjournal.invalid";

/// One parsed command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// EHLO with the client's name.
    Ehlo(String),
    /// HELO with the client's name.
    Helo(String),
    /// MAIL FROM.
    Mail {
        /// The reverse path, as written.
        reverse_path: ReversePath,
        /// The size the client declared, if any (RFC 1870).
        declared_size: Option<usize>,
        /// BODY=8BITMIME or SMTPUTF8 was given.
        eight_bit: bool,
        /// SMTPUTF8 was given (RFC 6531).
        smtputf8: bool,
    },
    /// RCPT TO.
    Rcpt(Address),
    /// DATA.
    Data,
    /// BDAT (CHUNKING is not offered); the size of the chunk that follows.
    Bdat(usize),
    /// RSET.
    Rset,
    /// NOOP.
    Noop,
    /// QUIT.
    Quit,
    /// VRFY.
    Vrfy,
    /// EXPN.
    Expn,
    /// HELP.
    Help,
    /// STARTTLS.
    StartTls,
    /// AUTH (not offered).
    Auth,
    /// Any other verb smtp-proto knows but we do not offer.
    NotImplemented(&'static str),
}

/// Parses one command line (CRLF included). An error is the full reply.
pub fn parse(line: &[u8]) -> Result<Command, &'static str> {
    if line.contains(&0) {
        return Err("500 5.5.2 NUL byte in command");
    }

    // MAIL and RCPT: smtp-proto reads the parameters of a line whose path is
    // a placeholder, so its address rules (no IP literals, no quotes kept)
    // never decide; the real path is checked by policy::Address.
    let standin = stand_in_path(line);
    let request =
        Request::parse(&mut standin.as_deref().unwrap_or(line).iter()).map_err(reply_for)?;
    Ok(match request {
        Request::Ehlo { host } => Command::Ehlo(host.into_owned()),
        Request::Helo { host } => Command::Helo(host.into_owned()),
        Request::Lhlo { .. } => Command::NotImplemented("LHLO"),
        Request::Mail { from } => {
            let raw = raw_path(line).ok_or("501 5.5.4 Syntax: MAIL FROM:<address>")?;
            let reverse_path = if raw.is_empty() {
                ReversePath::Null
            } else {
                let allow_bare = raw.eq_ignore_ascii_case("postmaster");
                ReversePath::Mailbox(
                    Address::parse(raw, allow_bare)
                        .map_err(|_| "553 5.1.7 Malformed sender address")?,
                )
            };
            if from.flags & UNOFFERED_MAIL != 0 || from.env_id.is_some() {
                return Err("555 5.5.4 Parameter of an extension not offered");
            }
            let declared_size = (from.size > 0).then_some(from.size);
            let eight_bit = from.flags & (MAIL_BODY_8BITMIME | MAIL_SMTPUTF8) != 0;
            Command::Mail {
                reverse_path,
                declared_size,
                eight_bit,
                smtputf8: from.flags & MAIL_SMTPUTF8 != 0,
            }
        }
        Request::Rcpt { to } => {
            if to.flags & UNOFFERED_RCPT != 0 || to.orcpt.is_some() {
                return Err("555 5.5.4 Parameter of an extension not offered");
            }
            let raw = raw_path(line).ok_or("501 5.5.4 Syntax: RCPT TO:<address>")?;
            if raw.is_empty() {
                return Err("501 5.1.3 Empty recipient address");
            }
            let allow_bare = raw.eq_ignore_ascii_case("postmaster");
            Command::Rcpt(
                Address::parse(raw, allow_bare)
                    .map_err(|_| "553 5.1.3 Malformed recipient address")?,
            )
        }
        Request::Data => Command::Data,
        Request::Bdat { chunk_size, .. } => Command::Bdat(chunk_size),
        Request::Rset => Command::Rset,
        Request::Noop { .. } => Command::Noop,
        Request::Quit => Command::Quit,
        Request::Vrfy { .. } => Command::Vrfy,
        Request::Expn { .. } => Command::Expn,
        Request::Help { .. } => Command::Help,
        Request::StartTls => Command::StartTls,
        Request::Auth { .. } => Command::Auth,
        Request::Etrn { .. } => Command::NotImplemented("ETRN"),
        Request::Atrn { .. } => Command::NotImplemented("ATRN"),
        Request::Burl { .. } => Command::NotImplemented("BURL"),
    })
}

fn reply_for(error: ProtoError) -> &'static str {
    match error {
        ProtoError::UnknownCommand => "500 5.5.1 Command unrecognized",
        ProtoError::InvalidSenderAddress => "553 5.1.7 Malformed sender address",
        ProtoError::InvalidRecipientAddress => "553 5.1.3 Malformed recipient address",
        ProtoError::SyntaxError { syntax } => match syntax {
            s if s.starts_with("MAIL") => "501 5.5.4 Syntax: MAIL FROM:<address> [parameters]",
            s if s.starts_with("RCPT") => "501 5.5.4 Syntax: RCPT TO:<address> [parameters]",
            _ => "501 5.5.4 Syntax error in parameters or arguments",
        },
        ProtoError::InvalidParameter { .. } => "501 5.5.4 Invalid parameter",
        ProtoError::UnsupportedParameter { .. } => "555 5.5.4 Unsupported parameter",
        ProtoError::NeedsMoreData { .. } => "500 5.5.2 Incomplete command line",
        _ => "500 5.5.2 Syntax error",
    }
}

/// A copy of a MAIL or RCPT line with its path replaced by [`PLACEHOLDER`]
/// (the null path stays `<>`); `None` for other lines or unreadable paths.
fn stand_in_path(line: &[u8]) -> Option<Vec<u8>> {
    let verb = line.get(..4)?;
    if !verb.eq_ignore_ascii_case(b"MAIL") && !verb.eq_ignore_ascii_case(b"RCPT") {
        return None;
    }
    let path = raw_path(line)?;
    let colon = line.iter().position(|&b| b == b':')?;
    let open = colon + 1 + line[colon + 1..].iter().position(|&b| b == b'<')?;
    let close = open + 1 + path.len();
    let mut copy = Vec::with_capacity(line.len());
    copy.extend_from_slice(&line[..=open]);
    if !path.is_empty() {
        copy.extend_from_slice(PLACEHOLDER.as_bytes());
    }
    copy.extend_from_slice(&line[close..]);
    Some(copy)
}

/// The path between `<` and `>` of a MAIL or RCPT line, exactly as written.
/// A `>` inside a quoted string or after a backslash does not close it.
pub fn raw_path(line: &[u8]) -> Option<&str> {
    let colon = line.iter().position(|&b| b == b':')?;
    let rest = &line[colon + 1..];
    let open = rest.iter().position(|&b| !b.is_ascii_whitespace())?;
    if rest[open] != b'<' {
        return None;
    }
    let path = &rest[open + 1..];

    let mut quoted = false;
    let mut i = 0;
    while i < path.len() {
        match path[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'>' if !quoted => {
                return std::str::from_utf8(&path[..i]).ok();
            }
            b'\r' | b'\n' => return None,
            _ => {}
        }
        i += 1;
    }
    None
}

/// The EHLO/HELO argument, cleaned for use in a Received field.
pub fn clean_helo(name: &str) -> Cow<'_, str> {
    let clean = |c: char| c.is_ascii_graphic() && !"()\\".contains(c);
    if name.chars().all(clean) && !name.is_empty() {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(
            name.chars()
                .map(|c| if clean(c) { c } else { '?' })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(line: &str) -> Result<Command, &'static str> {
        parse(format!("{line}\r\n").as_bytes())
    }

    #[test]
    fn null_sender_and_postmaster_are_told_apart() {
        let null = mail("MAIL FROM:<> SIZE=2048 AUTH=<>").expect("null sender");
        assert_eq!(
            null,
            Command::Mail {
                reverse_path: ReversePath::Null,
                declared_size: Some(2048),
                eight_bit: false,
                smtputf8: false
            }
        );
        let Ok(Command::Mail { reverse_path, .. }) = mail("MAIL FROM:<postmaster>") else {
            panic!("postmaster sender refused");
        };
        assert_eq!(reverse_path.as_str(), "postmaster");
        let Ok(Command::Rcpt(to)) = mail("RCPT TO:<Postmaster>") else {
            panic!("Postmaster recipient refused");
        };
        assert_eq!(to.as_str(), "Postmaster");
    }

    #[test]
    fn quoted_local_parts_keep_their_quotes() {
        let Ok(Command::Mail { reverse_path, .. }) =
            mail("MAIL FROM:<\"alice smith\"@example.com>")
        else {
            panic!("quoted sender refused");
        };
        assert_eq!(reverse_path.as_str(), "\"alice smith\"@example.com");
        for (line, expected) in [
            (
                "RCPT TO:<\"bob@legacy\"@example.net>",
                "\"bob@legacy\"@example.net",
            ),
            (
                "RCPT TO:<\"carol\\\\ops\"@example.net>",
                "\"carol\\\\ops\"@example.net",
            ),
            ("RCPT TO:<\"a>b\"@example.net>", "\"a>b\"@example.net"),
        ] {
            match mail(line) {
                Ok(Command::Rcpt(to)) => assert_eq!(to.as_str(), expected),
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    #[test]
    fn long_srs_senders_are_accepted() {
        let line =
            "MAIL FROM:<SRS0=k3Zp=QX=lists.example.org=bounce-7f3a9c2e5d1b4a608e7c9f2d1a3b5c7e\
                    -bob=example.com@example.org>";
        assert!(
            matches!(mail(line), Ok(Command::Mail { .. })),
            "{:?}",
            mail(line)
        );
    }

    #[test]
    fn malformed_commands_get_clear_replies() {
        assert_eq!(mail("FOO"), Err("500 5.5.1 Command unrecognized"));
        assert!(mail("MAIL FROM:bob").unwrap_err().starts_with("501"));
        assert!(mail("RCPT TO:<>").unwrap_err().starts_with("501"));
        assert!(mail("RCPT TO:<a b@example.com>")
            .unwrap_err()
            .starts_with("5"));
        assert_eq!(parse(b"NOOP\0\r\n"), Err("500 5.5.2 NUL byte in command"));
    }

    #[test]
    fn address_literals_are_valid_paths() {
        for line in [
            "MAIL FROM:<a@[192.0.2.1]>",
            "MAIL FROM:<a@[IPv6:2001:db8::1]> SIZE=10",
        ] {
            assert!(
                matches!(mail(line), Ok(Command::Mail { .. })),
                "{line}: {:?}",
                mail(line)
            );
        }
        match mail("RCPT TO:<bob@[127.0.0.1]>") {
            Ok(Command::Rcpt(to)) => assert_eq!(to.as_str(), "bob@[127.0.0.1]"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parameters_of_extensions_not_offered_are_refused() {
        for line in [
            "MAIL FROM:<a@example.com> RET=HDRS",
            "MAIL FROM:<a@example.com> ENVID=x",
            "RCPT TO:<b@example.com> NOTIFY=NEVER",
            "RCPT TO:<b@example.com> ORCPT=rfc822;b@example.com",
        ] {
            assert_eq!(
                mail(line),
                Err("555 5.5.4 Parameter of an extension not offered"),
                "{line}"
            );
        }
        let Ok(Command::Mail { smtputf8, .. }) =
            mail("MAIL FROM:<j\u{f6}s\u{e9}@example.net> SMTPUTF8")
        else {
            panic!("SMTPUTF8 sender refused");
        };
        assert!(smtputf8);
    }

    #[test]
    fn eight_bit_body_is_noticed() {
        let Ok(Command::Mail { eight_bit, .. }) = mail("MAIL FROM:<a@example.com> BODY=8BITMIME")
        else {
            panic!("BODY=8BITMIME refused");
        };
        assert!(eight_bit);
    }

    #[test]
    fn helo_names_cannot_break_the_received_field() {
        assert_eq!(clean_helo("mx.example.org"), "mx.example.org");
        assert_eq!(clean_helo("[192.0.2.1]"), "[192.0.2.1]");
        assert_eq!(clean_helo("evil) by x (\r\n"), "evil??by?x????");
    }
}
