//! The rules of §2, one function per section: each returns the typed
//! section or records what is wrong with it, key first, and never stops at
//! the first problem.

use std::net::SocketAddr;

use directory::{DirectoryConfig, Mapping};
use ipnet::IpNet;
use policy::{Address, DirectionRules, JournalFormat, JournalRules};

use super::*;
use crate::next_hop::NextHop;

#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<String>);

impl Problems {
    pub(super) fn add(&mut self, key: &str, message: impl fmt::Display) {
        self.0.push(format!("{key}: {message}"));
    }
}

pub(super) fn check_server(raw: RawServer, problems: &mut Problems) -> Option<Server> {
    let mut ok = true;
    if raw.hostname.trim().is_empty() || raw.hostname.contains(char::is_whitespace) {
        problems.add(
            "server.hostname",
            "must be a host name such as \"gw.example.com\"",
        );
        ok = false;
    }

    let mut listen = Vec::new();
    for text in &raw.listen {
        match text.parse::<SocketAddr>() {
            Ok(address) => listen.push(address),
            Err(_) => {
                problems.add(
                    "server.listen",
                    format!("{text:?} is not an IP:port address"),
                );
                ok = false;
            }
        }
    }
    if raw.listen.is_empty() {
        problems.add("server.listen", "needs at least one address");
        ok = false;
    }

    if raw.max_message_size < 1024 {
        problems.add("server.max_message_size", "must be at least 1024 bytes");
        ok = false;
    }
    if raw.max_connections == 0 {
        problems.add("server.max_connections", "must be at least 1");
        ok = false;
    }

    let tls = match (raw.tls_cert, raw.tls_key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => {
            problems.add("server.tls_key", "required when server.tls_cert is set");
            ok = false;
            None
        }
        (None, Some(_)) => {
            problems.add("server.tls_cert", "required when server.tls_key is set");
            ok = false;
            None
        }
    };

    let admin_listen = match raw.admin_listen.as_deref().map(str::parse::<SocketAddr>) {
        None => None,
        Some(Ok(address)) => Some(address),
        Some(Err(_)) => {
            problems.add("server.admin_listen", "is not an IP:port address");
            ok = false;
            None
        }
    };

    ok.then_some(Server {
        hostname: raw.hostname,
        listen,
        spool_dir: raw.spool_dir,
        max_message_size: raw.max_message_size,
        max_connections: raw.max_connections,
        tls,
        admin_listen,
    })
}

pub(super) fn check_routing(raw: RawRouting, problems: &mut Problems) -> Option<Routing> {
    let mut ok = true;
    if raw.local_domains.is_empty() {
        problems.add("routing.local_domains", "needs at least one domain");
        ok = false;
    }
    for domain in &raw.local_domains {
        let probe = format!("postmaster@{domain}");
        if Address::parse(&probe, false).is_err() {
            problems.add(
                "routing.local_domains",
                format!("{domain:?} is not a domain"),
            );
            ok = false;
        }
    }

    let mut internal_networks = Vec::new();
    for text in &raw.internal_networks {
        let parsed = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) => internal_networks.push(net),
            Err(_) => {
                problems.add(
                    "routing.internal_networks",
                    format!("{text:?} is not a network such as \"10.0.0.0/8\""),
                );
                ok = false;
            }
        }
    }

    let mut hop = |key: &str, text: &str| match NextHop::parse(text) {
        Ok(hop) => Some(hop),
        Err(e) => {
            problems.add(key, e);
            None
        }
    };
    let inbound = hop("routing.inbound_next_hop", &raw.inbound_next_hop);
    let outbound = hop("routing.outbound_next_hop", &raw.outbound_next_hop);
    let journal = match &raw.journal_next_hop {
        Some(text) => hop("routing.journal_next_hop", text),
        None => inbound.clone(),
    };

    match (inbound, outbound, journal) {
        (Some(inbound), Some(outbound), Some(journal)) if ok => Some(Routing {
            local_domains: raw
                .local_domains
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            internal_networks,
            inbound_next_hop: inbound,
            outbound_next_hop: outbound,
            journal_next_hop: journal,
        }),
        _ => None,
    }
}

pub(super) fn check_journal(
    raw: RawJournal,
    has_directory: bool,
    problems: &mut Problems,
) -> Option<Journal> {
    let mut ok = true;
    let mut directory_targets = DirectoryTargets::default();

    let address = |key: &str, text: &str, problems: &mut Problems| match Address::from_config(text)
    {
        Ok(address) => Some(address),
        Err(e) => {
            problems.add(key, format!("{text:?} is not an address ({e})"));
            None
        }
    };

    // Targets of one direction: addresses, or ldap:/// DNs for the directory.
    let targets = |key: &str, list: Option<OneOrMany>, dns: &mut Vec<String>, p: &mut Problems| {
        let mut found = Vec::new();
        let mut good = true;
        for text in list.map(OneOrMany::into_vec).unwrap_or_default() {
            if let Some(dn) = text.strip_prefix("ldap:///") {
                if dn.trim().is_empty() {
                    p.add(key, "an ldap:/// target needs a DN after the slashes");
                    good = false;
                } else {
                    dns.push(dn.to_owned());
                }
            } else {
                match address(key, &text, p) {
                    Some(a) => found.push(a),
                    None => good = false,
                }
            }
        }
        (found, good)
    };
    let (inbound_targets, good_in) = targets(
        "journal.inbound",
        raw.inbound,
        &mut directory_targets.inbound,
        problems,
    );
    let (outbound_targets, good_out) = targets(
        "journal.outbound",
        raw.outbound,
        &mut directory_targets.outbound,
        problems,
    );
    ok &= good_in && good_out;

    let address = |key: &str, text: &Option<String>, problems: &mut Problems| {
        text.as_deref().map(|t| match Address::from_config(t) {
            Ok(address) => Some(address),
            Err(e) => {
                problems.add(key, format!("{t:?} is not an address ({e})"));
                None
            }
        })
    };
    let inbound_ndr = address("journal.inbound_ndr", &raw.inbound_ndr, problems);
    let outbound_ndr = address("journal.outbound_ndr", &raw.outbound_ndr, problems);
    let report_sender = address("journal.report_sender", &raw.report_sender, problems);
    ok &= !matches!(inbound_ndr, Some(None))
        && !matches!(outbound_ndr, Some(None))
        && !matches!(report_sender, Some(None));

    // The original product required the NDR value whenever a direction was
    // journaled, globally or per recipient; so do we.
    let direction = |name: &str,
                     targets: Vec<Address>,
                     dns: &[String],
                     attribute: &Option<String>,
                     ndr: Option<Option<Address>>,
                     problems: &mut Problems| {
        let journaled = !targets.is_empty() || !dns.is_empty() || attribute.is_some();
        match (journaled, ndr) {
            (false, _) => None,
            (true, Some(Some(ndr))) => Some(DirectionRules { targets, ndr }),
            (true, Some(None)) => None,
            (true, None) => {
                problems.add(
                    &format!("journal.{name}_ndr"),
                    format!(
                        "required when journal.{name} or journal.{name}_recipient_attribute is set"
                    ),
                );
                None
            }
        }
    };
    let inbound = direction(
        "inbound",
        inbound_targets,
        &directory_targets.inbound,
        &raw.inbound_recipient_attribute,
        inbound_ndr,
        problems,
    );
    let outbound = direction(
        "outbound",
        outbound_targets,
        &directory_targets.outbound,
        &raw.outbound_recipient_attribute,
        outbound_ndr,
        problems,
    );

    for (key, attribute) in [
        (
            "journal.inbound_recipient_attribute",
            &raw.inbound_recipient_attribute,
        ),
        (
            "journal.outbound_recipient_attribute",
            &raw.outbound_recipient_attribute,
        ),
    ] {
        if attribute.is_some() && !has_directory {
            problems.add(key, "needs a [directory] section to look the attribute up");
            ok = false;
        }
        if attribute.as_deref().is_some_and(|a| a.trim().is_empty()) {
            problems.add(key, "must name an attribute");
            ok = false;
        }
    }
    let has_ldap_targets =
        !directory_targets.inbound.is_empty() || !directory_targets.outbound.is_empty();
    if has_ldap_targets && !has_directory {
        problems.add(
            "journal.inbound/outbound",
            "ldap:/// targets need a [directory] section",
        );
        ok = false;
    }

    let journaled = inbound.is_some() || outbound.is_some();
    let report_sender = report_sender.flatten();
    if journaled && raw.format == JournalFormat::Envelope && report_sender.is_none() {
        problems.add(
            "journal.report_sender",
            "required when journal.format is \"envelope\" (the From: of journal reports)",
        );
        ok = false;
    }

    ok.then_some(Journal {
        format: raw.format,
        report_sender,
        rules: JournalRules { inbound, outbound },
        directory_targets,
        inbound_recipient_attribute: raw.inbound_recipient_attribute,
        outbound_recipient_attribute: raw.outbound_recipient_attribute,
        hidden_check: raw.hidden_check,
    })
}

pub(super) fn check_queue(queue: &Queue, problems: &mut Problems) {
    if queue.retry_initial.is_zero() {
        problems.add("queue.retry_initial", "must be longer than zero");
    }
    if queue.retry_max < queue.retry_initial {
        problems.add(
            "queue.retry_max",
            "must not be shorter than queue.retry_initial",
        );
    }
    if queue.max_age < queue.retry_initial {
        problems.add(
            "queue.max_age",
            "must not be shorter than queue.retry_initial",
        );
    }
    if queue.connect_timeout.is_zero() {
        problems.add("queue.connect_timeout", "must be longer than zero");
    }
    if queue.command_timeout.is_zero() {
        problems.add("queue.command_timeout", "must be longer than zero");
    }
}

pub(super) fn check_directory(
    directory: &DirectoryConfig,
    journal: &RawJournal,
    problems: &mut Problems,
) {
    for (key, problem) in directory.check() {
        problems.add(&format!("directory.{key}"), problem);
    }

    // A legacy property value must translate through the mapping.
    let Ok(mapping) = Mapping::load(&directory.mapping) else {
        return;
    };
    for (key, attribute) in [
        (
            "journal.inbound_recipient_attribute",
            &journal.inbound_recipient_attribute,
        ),
        (
            "journal.outbound_recipient_attribute",
            &journal.outbound_recipient_attribute,
        ),
    ] {
        if let Some(attribute) = attribute {
            if let Err(e) = mapping.attribute_for(attribute) {
                problems.add(key, e);
            }
        }
    }
}
