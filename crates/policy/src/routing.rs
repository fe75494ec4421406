//! Direction, relay control and next-hop choice (product contract §1, §4).
//!
//! Direction follows the client's network and nothing else: a message from
//! outside that claims a local sender is still inbound. An outside client may
//! reach only local domains, and never a journal or NDR address, so nobody
//! outside can write into the journal.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::address::Address;
use crate::journal::Direction;

/// Which configured next hop a recipient's copy of the original goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// `routing.inbound_next_hop`: the organisation's own mail server.
    Inbound,
    /// `routing.outbound_next_hop`: the smarthost towards the Internet.
    Outbound,
}

/// Why a recipient is refused at RCPT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// An outside client named a domain that is not ours.
    RelayDenied,
    /// An outside client named a journal or NDR address.
    ProtectedTarget,
}

impl Refusal {
    /// The SMTP reply for this refusal (RFC 5321 §4.2, RFC 3463 codes).
    pub fn reply(self) -> &'static str {
        match self {
            Refusal::RelayDenied => "550 5.7.1 Relaying denied",
            Refusal::ProtectedTarget => "550 5.1.1 No such recipient",
        }
    }
}

/// The routing part of the configuration.
#[derive(Clone, Debug)]
pub struct Routing {
    local_domains: Vec<String>,
    internal_networks: Vec<IpNet>,
    protected: Vec<Address>,
}

impl Routing {
    /// `protected` are the addresses outside clients may never reach: every
    /// global journal target and every NDR address.
    pub fn new(
        local_domains: Vec<String>,
        internal_networks: Vec<IpNet>,
        protected: Vec<Address>,
    ) -> Routing {
        Routing {
            local_domains,
            internal_networks,
            protected,
        }
    }

    /// The local domains, as configured.
    pub fn local_domains(&self) -> &[String] {
        &self.local_domains
    }

    /// Inbound unless the client stands in an internal network.
    pub fn direction(&self, client: IpAddr) -> Direction {
        let client = canonical(client);
        if self
            .internal_networks
            .iter()
            .any(|net| net.contains(&client))
        {
            Direction::Outbound
        } else {
            Direction::Inbound
        }
    }

    /// Whether the address is in a local domain.
    pub fn is_local(&self, address: &Address) -> bool {
        address.in_domains(&self.local_domains)
    }

    /// Decides at RCPT whether the recipient is acceptable and where it goes.
    pub fn admit(&self, direction: Direction, recipient: &Address) -> Result<Route, Refusal> {
        if direction == Direction::Inbound {
            // `user%host@local` and `host!user@local` ask the next server to
            // relay onwards: from outside, that is relaying.
            if !self.is_local(recipient) || recipient.has_routing_hack() {
                return Err(Refusal::RelayDenied);
            }
            if self.is_protected(recipient) {
                return Err(Refusal::ProtectedTarget);
            }
        }
        Ok(self.route(recipient))
    }

    /// Local recipients go to the inbound next hop, all others outbound.
    pub fn route(&self, recipient: &Address) -> Route {
        if self.is_local(recipient) {
            Route::Inbound
        } else {
            Route::Outbound
        }
    }

    /// Whether the address may reach a journal or NDR mailbox: compared as
    /// the mailbox a receiving server would deliver to (quotes, case and
    /// `+subaddress` do not make another mailbox).
    pub fn is_protected(&self, address: &Address) -> bool {
        let wanted = address.base_mailbox();
        self.protected.iter().any(|p| p.base_mailbox() == wanted)
    }
}

/// An IPv4-mapped IPv6 client (`::ffff:10.0.0.1`) is matched as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Address {
        Address::parse(text, true).expect("test address")
    }

    fn routing() -> Routing {
        Routing::new(
            vec!["example.com".into()],
            vec!["10.0.0.0/8".parse().expect("net")],
            vec![addr("journal@example.com"), addr("journal-ndr@example.com")],
        )
    }

    #[test]
    fn direction_follows_the_network_not_the_sender() {
        let r = routing();
        assert_eq!(
            r.direction("10.1.2.3".parse().expect("ip")),
            Direction::Outbound
        );
        assert_eq!(
            r.direction("::ffff:10.1.2.3".parse().expect("ip")),
            Direction::Outbound
        );
        assert_eq!(
            r.direction("192.0.2.1".parse().expect("ip")),
            Direction::Inbound
        );
    }

    #[test]
    fn outside_clients_reach_only_local_unprotected_recipients() {
        let r = routing();
        assert_eq!(
            r.admit(Direction::Inbound, &addr("bob@example.com")),
            Ok(Route::Inbound)
        );
        assert_eq!(
            r.admit(Direction::Inbound, &addr("Postmaster")),
            Ok(Route::Inbound)
        );
        assert_eq!(
            r.admit(Direction::Inbound, &addr("bob@example.net")),
            Err(Refusal::RelayDenied)
        );
        assert_eq!(
            r.admit(Direction::Inbound, &addr("JOURNAL@Example.com")),
            Err(Refusal::ProtectedTarget)
        );
        assert_eq!(
            r.admit(Direction::Inbound, &addr("journal-ndr@example.com")),
            Err(Refusal::ProtectedTarget)
        );
        for disguised in [
            "\"journal\"@example.com",
            "\"JOURNAL\"@example.com",
            "\"\\journal\"@example.com",
            "\"journal-ndr\"@EXAMPLE.COM",
            "journal+x@example.com",
        ] {
            assert_eq!(
                r.admit(Direction::Inbound, &addr(disguised)),
                Err(Refusal::ProtectedTarget),
                "{disguised}"
            );
        }
        for hack in [
            "journal%example.com@example.com",
            "example.com!journal@example.com",
        ] {
            assert_eq!(
                r.admit(Direction::Inbound, &addr(hack)),
                Err(Refusal::RelayDenied),
                "{hack}"
            );
        }
    }

    #[test]
    fn inside_clients_relay_anywhere() {
        let r = routing();
        assert_eq!(
            r.admit(Direction::Outbound, &addr("x@example.net")),
            Ok(Route::Outbound)
        );
        assert_eq!(
            r.admit(Direction::Outbound, &addr("bob@example.com")),
            Ok(Route::Inbound)
        );
        assert_eq!(
            r.admit(Direction::Outbound, &addr("journal@example.com")),
            Ok(Route::Inbound)
        );
    }
}
