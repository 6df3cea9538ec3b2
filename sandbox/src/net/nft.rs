//! kiln's nftables table, as data: [`ruleset`] gives the chains and rules, [`Rule`] prints
//! them in `nft` syntax (docs, tests) and [`create_batch`] / [`delete_batch`] encode
//! them as one nfnetlink transaction each.
//!
//! The table (`ip kiln`) is kiln's alone. Setting it up is one batch that creates it
//! exclusively with all its chains and rules: when it exists already (another kiln, or
//! one killed with `kill -9`, made it) the kernel refuses the whole batch with `EEXIST`
//! and nothing changes, so any number of kiln processes converge on a single copy of each
//! rule and never duplicate one, without the cost of replacing a table whose base chains
//! are in use (unregistering a hook waits for RCU). A refused batch is not free either
//! (its abort waits for RCU too), so a run first asks whether the table is there
//! ([`get_table`]) and sends the batch only when it is not.

use std::fmt;
use std::net::Ipv4Addr;

use super::netlink::{F_ACK, F_APPEND, F_CREATE, F_EXCL, F_REQUEST, Msg};

/// The table's name (family `ip`).
pub const TABLE: &str = "kiln";
/// The prefix of every host-side veth kiln makes (`kiln-N`); the rules match on it.
pub const IF_PREFIX: &str = "kiln-";

/// A base chain of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    /// Its name.
    pub name: &'static str,
    /// `filter` or `nat`.
    pub kind: &'static str,
    /// The netfilter hook.
    pub hook: Hook,
    /// Its priority (`srcnat` = 100, `filter` = 0).
    pub priority: i32,
}

/// The netfilter hooks kiln's chains use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `input` (`NF_INET_LOCAL_IN`).
    Input,
    /// `forward` (`NF_INET_FORWARD`).
    Forward,
    /// `postrouting` (`NF_INET_POST_ROUTING`).
    Postrouting,
}

impl Hook {
    fn number(self) -> u32 {
        match self {
            Hook::Input => 1,
            Hook::Forward => 2,
            Hook::Postrouting => 4,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Postrouting => "postrouting",
        }
    }
}

/// One match of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// `iifname "kiln-*"` (or `!=`).
    InIfPrefix(bool),
    /// `oifname "kiln-*"` (or `!=`).
    OutIfPrefix(bool),
    /// `ip saddr NET/LEN`.
    Saddr(Ipv4Addr, u8),
    /// `ip daddr NET/LEN`.
    Daddr(Ipv4Addr, u8),
    /// `ct state established,related`.
    EstablishedOrRelated,
}

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `accept`
    Accept,
    /// `drop`
    Drop,
    /// `masquerade`
    Masquerade,
}

/// One rule: matches, all of which must hold, and an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The chain it is appended to.
    pub chain: &'static str,
    /// Its matches.
    pub matches: Vec<Match>,
    /// Its action.
    pub action: Action,
}

/// The chains of kiln's table.
pub const CHAINS: [Chain; 3] = [
    Chain {
        name: "postrouting",
        kind: "nat",
        hook: Hook::Postrouting,
        priority: 100,
    },
    Chain {
        name: "forward",
        kind: "filter",
        hook: Hook::Forward,
        priority: 0,
    },
    Chain {
        name: "input",
        kind: "filter",
        hook: Hook::Input,
        priority: 0,
    },
];

/// The rules for sandboxes addressed from `pool` (`NET/LEN`):
///
/// - masquerade what they send out of the host (Docker's `-s POOL ! -o docker0 -j
///   MASQUERADE`);
/// - forward: nothing from one sandbox to another, all from a sandbox outwards, into a
///   sandbox only replies (Docker's bridge rules);
/// - input: nothing from a sandbox to the host's loopback addresses, even where
///   `route_localnet` is on (kube-proxy sets it), so `127.0.0.1` services stay out of
///   reach.
///
/// The chains' policy is `accept`: kiln's table adds restrictions for its own interfaces
/// and leaves every other packet to the host's firewall.
pub fn ruleset(pool: (Ipv4Addr, u8)) -> Vec<Rule> {
    use Match::*;
    let rule = |chain, matches, action| Rule {
        chain,
        matches,
        action,
    };
    vec![
        rule(
            "postrouting",
            vec![Saddr(pool.0, pool.1), OutIfPrefix(false)],
            Action::Masquerade,
        ),
        rule(
            "forward",
            vec![InIfPrefix(true), OutIfPrefix(true)],
            Action::Drop,
        ),
        rule("forward", vec![InIfPrefix(true)], Action::Accept),
        rule(
            "forward",
            vec![OutIfPrefix(true), EstablishedOrRelated],
            Action::Accept,
        ),
        rule("forward", vec![OutIfPrefix(true)], Action::Drop),
        rule(
            "input",
            vec![InIfPrefix(true), Daddr(Ipv4Addr::new(127, 0, 0, 0), 8)],
            Action::Drop,
        ),
    ]
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let eq = |yes: bool| if yes { "" } else { "!= " };
        for m in &self.matches {
            match m {
                Match::InIfPrefix(yes) => write!(f, "iifname {}\"{IF_PREFIX}*\" ", eq(*yes))?,
                Match::OutIfPrefix(yes) => write!(f, "oifname {}\"{IF_PREFIX}*\" ", eq(*yes))?,
                Match::Saddr(net, len) => write!(f, "ip saddr {net}/{len} ")?,
                Match::Daddr(net, len) => write!(f, "ip daddr {net}/{len} ")?,
                Match::EstablishedOrRelated => write!(f, "ct state established,related ")?,
            }
        }
        f.write_str(match self.action {
            Action::Accept => "accept",
            Action::Drop => "drop",
            Action::Masquerade => "masquerade",
        })
    }
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "chain {} {{ type {} hook {} priority {}; policy accept; }}",
            self.name,
            self.kind,
            self.hook.name(),
            self.priority
        )
    }
}

// <linux/netfilter/nfnetlink.h>, <linux/netfilter/nf_tables.h>
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFPROTO_IPV4: u8 = 2;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;

fn nfgen(family: u8, res_id: u16) -> [u8; 4] {
    let id = res_id.to_be_bytes();
    [family, 0, id[0], id[1]]
}

fn nft_msg(ty: u16, flags: u16) -> Msg {
    Msg::new((NFNL_SUBSYS_NFTABLES << 8) | ty, F_REQUEST | flags).header(&nfgen(NFPROTO_IPV4, 0))
}

fn batch(inner: Vec<Msg>) -> Vec<(Msg, bool)> {
    let begin = Msg::new(NFNL_MSG_BATCH_BEGIN, F_REQUEST).header(&nfgen(0, NFNL_SUBSYS_NFTABLES));
    let end = Msg::new(NFNL_MSG_BATCH_END, F_REQUEST).header(&nfgen(0, NFNL_SUBSYS_NFTABLES));
    std::iter::once((begin, false))
        .chain(inner.into_iter().map(|m| (m, true)))
        .chain(std::iter::once((end, false)))
        .collect()
}

fn table_msg(ty: u16, flags: u16) -> Msg {
    let mut msg = nft_msg(ty, flags);
    msg.attr_str(1, TABLE); // NFTA_TABLE_NAME
    msg
}

/// The batch that creates kiln's table with [`CHAINS`] and `rules`, or fails as a whole
/// with `EEXIST` when the table exists.
pub fn create_batch(rules: &[Rule]) -> Vec<(Msg, bool)> {
    let mut msgs = vec![table_msg(NFT_MSG_NEWTABLE, F_CREATE | F_EXCL | F_ACK)];
    for chain in CHAINS {
        let mut msg = nft_msg(NFT_MSG_NEWCHAIN, F_CREATE | F_ACK);
        msg.attr_str(1, TABLE) // NFTA_CHAIN_TABLE
            .attr_str(3, chain.name) // NFTA_CHAIN_NAME
            .nest(4) // NFTA_CHAIN_HOOK
            .attr_be32(1, chain.hook.number()) // NFTA_HOOK_HOOKNUM
            .attr_be32(2, chain.priority as u32) // NFTA_HOOK_PRIORITY
            .end()
            .attr_be32(5, NF_ACCEPT) // NFTA_CHAIN_POLICY
            .attr_str(7, chain.kind); // NFTA_CHAIN_TYPE
        msgs.push(msg);
    }
    for rule in rules {
        msgs.push(rule_msg(rule));
    }
    batch(msgs)
}

/// The query whether kiln's table exists (`NFT_MSG_GETTABLE`, sent with
/// [`Socket::query`](super::netlink::Socket::query): the table, or `ENOENT`). Asked before
/// [`create_batch`] because it is no transaction: a batch the kernel refuses is aborted,
/// and the abort waits for an RCU grace period (~9 ms per RUN measured, when every RUN
/// sent the batch and got `EEXIST`).
pub fn get_table() -> Msg {
    table_msg(NFT_MSG_GETTABLE, 0)
}

/// The batch that deletes kiln's table (an error, `ENOENT`, when it does not exist).
pub fn delete_batch() -> Vec<(Msg, bool)> {
    batch(vec![table_msg(NFT_MSG_DELTABLE, F_ACK)])
}

fn rule_msg(rule: &Rule) -> Msg {
    let mut msg = nft_msg(NFT_MSG_NEWRULE, F_CREATE | F_APPEND | F_ACK);
    msg.attr_str(1, TABLE).attr_str(2, rule.chain); // NFTA_RULE_TABLE, NFTA_RULE_CHAIN
    msg.nest(4); // NFTA_RULE_EXPRESSIONS
    for m in &rule.matches {
        match m {
            Match::InIfPrefix(yes) | Match::OutIfPrefix(yes) => {
                let key = if matches!(m, Match::InIfPrefix(_)) {
                    6
                } else {
                    7
                }; // NFT_META_[IO]IFNAME
                expr(&mut msg, "meta", |e| {
                    e.attr_be32(1, NFT_REG_1).attr_be32(2, key); // DREG, KEY
                });
                // Comparing only the prefix's bytes is how nft matches `"kiln-*"`.
                cmp(&mut msg, !*yes, IF_PREFIX.as_bytes());
            }
            Match::Saddr(net, len) | Match::Daddr(net, len) => {
                let offset = if matches!(m, Match::Saddr(..)) {
                    12
                } else {
                    16
                };
                expr(&mut msg, "payload", |e| {
                    // DREG, BASE = network header, OFFSET, LEN
                    e.attr_be32(1, NFT_REG_1)
                        .attr_be32(2, 1)
                        .attr_be32(3, offset)
                        .attr_be32(4, 4);
                });
                let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
                bitwise(&mut msg, &mask.to_be_bytes());
                let net = u32::from(*net) & mask;
                cmp(&mut msg, false, &net.to_be_bytes());
            }
            Match::EstablishedOrRelated => {
                expr(&mut msg, "ct", |e| {
                    e.attr_be32(1, NFT_REG_1).attr_be32(2, 0); // DREG, KEY = NFT_CT_STATE
                });
                // IP_CT_ESTABLISHED and IP_CT_RELATED bits, in host order as ct stores them.
                bitwise(&mut msg, &6u32.to_ne_bytes());
                cmp(&mut msg, true, &0u32.to_ne_bytes());
            }
        }
    }
    match rule.action {
        Action::Masquerade => expr(&mut msg, "masq", |_| {}),
        Action::Accept | Action::Drop => {
            let code = if rule.action == Action::Accept {
                NF_ACCEPT
            } else {
                NF_DROP
            };
            expr(&mut msg, "immediate", |e| {
                e.attr_be32(1, NFT_REG_VERDICT) // NFTA_IMMEDIATE_DREG
                    .nest(2) // NFTA_IMMEDIATE_DATA
                    .nest(2) // NFTA_DATA_VERDICT
                    .attr_be32(1, code) // NFTA_VERDICT_CODE
                    .end()
                    .end();
            });
        }
    }
    msg.end();
    msg
}

fn expr(msg: &mut Msg, name: &str, data: impl FnOnce(&mut Msg)) {
    msg.nest(1).attr_str(1, name).nest(2); // NFTA_LIST_ELEM, NFTA_EXPR_NAME, NFTA_EXPR_DATA
    data(msg);
    msg.end().end();
}

fn cmp(msg: &mut Msg, not_equal: bool, value: &[u8]) {
    expr(msg, "cmp", |e| {
        e.attr_be32(1, NFT_REG_1) // NFTA_CMP_SREG
            .attr_be32(2, u32::from(not_equal)) // NFTA_CMP_OP: EQ 0, NEQ 1
            .nest(3) // NFTA_CMP_DATA
            .attr(1, value) // NFTA_DATA_VALUE
            .end();
    });
}

fn bitwise(msg: &mut Msg, mask: &[u8]) {
    let zero = vec![0u8; mask.len()];
    expr(msg, "bitwise", |e| {
        e.attr_be32(1, NFT_REG_1) // SREG
            .attr_be32(2, NFT_REG_1) // DREG
            .attr_be32(3, mask.len() as u32) // LEN
            .nest(4) // MASK
            .attr(1, mask)
            .end()
            .nest(5) // XOR
            .attr(1, &zero)
            .end();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_in_nft_syntax() {
        let rules: Vec<String> = ruleset((Ipv4Addr::new(10, 213, 0, 0), 16))
            .iter()
            .map(|r| format!("{}: {r}", r.chain))
            .collect();
        assert_eq!(
            rules,
            [
                "postrouting: ip saddr 10.213.0.0/16 oifname != \"kiln-*\" masquerade",
                "forward: iifname \"kiln-*\" oifname \"kiln-*\" drop",
                "forward: iifname \"kiln-*\" accept",
                "forward: oifname \"kiln-*\" ct state established,related accept",
                "forward: oifname \"kiln-*\" drop",
                "input: iifname \"kiln-*\" ip daddr 127.0.0.0/8 drop",
            ]
        );
        assert_eq!(
            CHAINS[0].to_string(),
            "chain postrouting { type nat hook postrouting priority 100; policy accept; }"
        );
    }

    #[test]
    fn batches_are_framed() {
        let rules = ruleset((Ipv4Addr::new(10, 213, 0, 0), 16));
        let msgs = create_batch(&rules);
        // begin, the table, the chains, the rules, end; only the inner ones acked.
        assert_eq!(msgs.len(), 2 + 1 + CHAINS.len() + rules.len());
        assert!(!msgs[0].1 && !msgs[msgs.len() - 1].1);
        assert!(msgs[1..msgs.len() - 1].iter().all(|(_, acked)| *acked));
        assert_eq!(delete_batch().len(), 3);
        // The query names the table, outside any batch.
        let query = get_table().finish(1);
        assert_eq!(
            u16::from_ne_bytes([query[4], query[5]]),
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE
        );
        assert!(query.windows(5).any(|w| w == b"kiln\0"));
    }
}
