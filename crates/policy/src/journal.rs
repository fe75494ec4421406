//! Which journal copies a message gets, and with which envelope.
//!
//! Every message of a journaled direction gets one journal transaction: the
//! envelope sender is that direction's NDR address, the recipients are the
//! global targets of the direction merged with the per-recipient targets the
//! directory found, each named once however many rules name it (product
//! contract §4). Since one message travels one direction, all its copies
//! share one NDR address and so one SMTP transaction.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::address::{Address, ReversePath};

/// The way a message travels through the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From a client outside `routing.internal_networks`.
    Inbound,
    /// From a client inside `routing.internal_networks`.
    Outbound,
}

impl Direction {
    /// The lower-case name used in configuration, headers and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Journaling of one direction: global targets and the NDR address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectionRules {
    /// Global journal targets; empty when only per-recipient journaling is on.
    pub targets: Vec<Address>,
    /// Envelope sender of every journal copy of this direction.
    pub ndr: Address,
}

/// Journaling of both directions, as configured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JournalRules {
    /// Rules for mail from outside; `None` when inbound is not journaled.
    pub inbound: Option<DirectionRules>,
    /// Rules for mail from inside; `None` when outbound is not journaled.
    pub outbound: Option<DirectionRules>,
}

/// Journal targets that the directory holds for one envelope address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientTargets {
    /// The recipient (inbound) or envelope sender (outbound) looked up.
    pub owner: Address,
    /// The addresses its journal attribute resolved to.
    pub targets: Vec<Address>,
}

/// The one journal transaction a message owes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalPlan {
    /// Direction of the journaled message.
    pub direction: Direction,
    /// `MAIL FROM` of the journal copies.
    pub ndr: Address,
    /// `RCPT TO` of the journal copies, each once.
    pub targets: Vec<Address>,
}

impl JournalRules {
    /// The rules of one direction, if it is journaled.
    pub fn for_direction(&self, direction: Direction) -> Option<&DirectionRules> {
        match direction {
            Direction::Inbound => self.inbound.as_ref(),
            Direction::Outbound => self.outbound.as_ref(),
        }
    }

    /// Every global target and NDR address: what outside clients may not reach.
    pub fn protected_addresses(&self) -> Vec<Address> {
        let mut all = Vec::new();
        for rules in [&self.inbound, &self.outbound].into_iter().flatten() {
            all.extend(rules.targets.iter().cloned());
            all.push(rules.ndr.clone());
        }
        dedup(all)
    }

    /// Whether a message is one of our own journal copies coming back: sent
    /// from inside, from an NDR address, and carrying a journal marker. A
    /// marker alone proves nothing, since anyone can write a header field: an
    /// insider must not be able to escape journaling by adding one.
    pub fn is_returning_copy(
        &self,
        direction: Direction,
        reverse_path: &ReversePath,
        marked: bool,
    ) -> bool {
        let from_ndr = reverse_path.mailbox().is_some_and(|sender| {
            [&self.inbound, &self.outbound]
                .into_iter()
                .flatten()
                .any(|rules| rules.ndr.same_mailbox(sender))
        });
        marked && direction == Direction::Outbound && from_ndr
    }

    /// The journal transaction for a message of `direction`, merging the
    /// global targets (those configured as addresses, and `resolved` ones the
    /// directory found for `ldap:///` targets) with those found per
    /// recipient. `None` when there is nothing to journal.
    pub fn plan(
        &self,
        direction: Direction,
        resolved: &[Address],
        found: &[RecipientTargets],
    ) -> Option<JournalPlan> {
        let rules = self.for_direction(direction)?;

        let mut targets = rules.targets.clone();
        targets.extend(resolved.iter().cloned());
        for entry in found {
            targets.extend(entry.targets.iter().cloned());
        }
        let targets = dedup(targets);
        if targets.is_empty() {
            return None;
        }

        Some(JournalPlan {
            direction,
            ndr: rules.ndr.clone(),
            targets,
        })
    }
}

/// Keeps the first of each mailbox, compared without case.
fn dedup(addresses: Vec<Address>) -> Vec<Address> {
    let mut kept: Vec<Address> = Vec::with_capacity(addresses.len());
    for address in addresses {
        if !kept.iter().any(|k| k.same_mailbox(&address)) {
            kept.push(address);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Address {
        Address::parse(text, false).expect("test address")
    }

    fn rules() -> JournalRules {
        JournalRules {
            inbound: Some(DirectionRules {
                targets: vec![addr("journal@example.com")],
                ndr: addr("journal-ndr@example.com"),
            }),
            outbound: Some(DirectionRules {
                targets: vec![addr("journal@example.com")],
                ndr: addr("journal-ndr@example.com"),
            }),
        }
    }

    #[test]
    fn global_targets_journal_each_direction_once() {
        let plan = rules()
            .plan(Direction::Inbound, &[], &[])
            .expect("inbound plan");
        assert_eq!(plan.targets, vec![addr("journal@example.com")]);
        assert_eq!(plan.ndr, addr("journal-ndr@example.com"));
        let plan = rules()
            .plan(Direction::Outbound, &[], &[])
            .expect("outbound plan");
        assert_eq!(plan.direction, Direction::Outbound);
    }

    #[test]
    fn one_copy_per_target_however_many_rules_name_it() {
        let found = vec![
            RecipientTargets {
                owner: addr("bob@example.com"),
                targets: vec![addr("JOURNAL@example.com"), addr("mgr@example.com")],
            },
            RecipientTargets {
                owner: addr("amy@example.com"),
                targets: vec![addr("mgr@Example.com")],
            },
        ];
        let plan = rules().plan(Direction::Inbound, &[], &found).expect("plan");
        assert_eq!(
            plan.targets,
            vec![addr("journal@example.com"), addr("mgr@example.com")]
        );
    }

    #[test]
    fn an_unjournaled_direction_gets_nothing() {
        let rules = JournalRules {
            inbound: None,
            ..rules()
        };
        assert_eq!(rules.plan(Direction::Inbound, &[], &[]), None);
    }

    #[test]
    fn per_recipient_only_journals_only_when_found() {
        let rules = JournalRules {
            inbound: Some(DirectionRules {
                targets: vec![],
                ndr: addr("ndr@example.com"),
            }),
            outbound: None,
        };
        assert_eq!(rules.plan(Direction::Inbound, &[], &[]), None);
        let found = vec![RecipientTargets {
            owner: addr("bob@example.com"),
            targets: vec![addr("mgr@example.com")],
        }];
        let plan = rules.plan(Direction::Inbound, &[], &found).expect("plan");
        assert_eq!(plan.targets, vec![addr("mgr@example.com")]);
    }

    #[test]
    fn resolved_ldap_targets_join_the_global_ones() {
        let resolved = vec![addr("archive@example.com"), addr("Journal@example.com")];
        let plan = rules()
            .plan(Direction::Inbound, &resolved, &[])
            .expect("plan");
        assert_eq!(
            plan.targets,
            vec![addr("journal@example.com"), addr("archive@example.com")]
        );
    }

    #[test]
    fn only_our_own_copies_coming_back_skip_journaling() {
        let ndr = ReversePath::Mailbox(addr("Journal-NDR@example.com"));
        let user = ReversePath::Mailbox(addr("bob@example.com"));
        let rules = rules();
        assert!(rules.is_returning_copy(Direction::Outbound, &ndr, true));
        assert!(!rules.is_returning_copy(Direction::Outbound, &user, true));
        assert!(!rules.is_returning_copy(Direction::Inbound, &ndr, true));
        assert!(!rules.is_returning_copy(Direction::Outbound, &ndr, false));
        assert!(!rules.is_returning_copy(Direction::Outbound, &ReversePath::Null, true));
    }

    #[test]
    fn protected_addresses_cover_targets_and_ndr_once() {
        assert_eq!(
            rules().protected_addresses(),
            vec![addr("journal@example.com"), addr("journal-ndr@example.com")]
        );
    }
}
