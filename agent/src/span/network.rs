//! Attributes every protocol's span shares: the `network.*` conventions and the peer as
//! `server.*`, from the connection's endpoints.

use std::net::IpAddr;

use agent_common::SockAddr;

use super::model::Attribute;
use crate::conn::ConnMeta;

/// IPv4-mapped addresses back to IPv4.
pub fn ip_of(a: &SockAddr) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(a.addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// `network.*` attributes every protocol's span carries.
pub fn push_network(attrs: &mut Vec<Attribute>, meta: &ConnMeta) {
    let remote = ip_of(&meta.remote);
    attrs.push(Attribute::new("network.peer.address", remote.to_string()));
    attrs.push(Attribute::new(
        "network.peer.port",
        i64::from(meta.remote.port),
    ));
    attrs.push(Attribute::new(
        "network.local.address",
        ip_of(&meta.local).to_string(),
    ));
    attrs.push(Attribute::new(
        "network.local.port",
        i64::from(meta.local.port),
    ));
    attrs.push(Attribute::new("network.transport", "tcp"));
    attrs.push(Attribute::new(
        "network.type",
        if matches!(remote, IpAddr::V4(_)) {
            "ipv4"
        } else {
            "ipv6"
        },
    ));
}

/// `server.address` / `server.port` as the remote end of a client's connection (a database or
/// a broker, whose address no header names).
pub fn push_server_is_peer(attrs: &mut Vec<Attribute>, meta: &ConnMeta) {
    attrs.push(Attribute::new(
        "server.address",
        ip_of(&meta.remote).to_string(),
    ));
    attrs.push(Attribute::new("server.port", i64::from(meta.remote.port)));
}
