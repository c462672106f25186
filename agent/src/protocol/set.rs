//! [`ProtocolSet`]: which protocols are traced for a process (decided by the `selection`
//! config), as bits, so the per-process cache on the data path holds a `Copy` value.

use super::ProtocolId;

/// A set of traced protocols, as bits (Copy, for the per-pid cache on the data path).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProtocolSet(u8);

/// Other names a config may use for a protocol besides its registry name
/// ([`ProtocolId::name`]): `http` (what users call HTTP/1) and `grpc` (HTTP/2 on the wire).
const ALIASES: &[(&str, ProtocolId)] = &[("http", ProtocolId::Http1), ("grpc", ProtocolId::Http2)];

impl ProtocolSet {
    pub const NONE: Self = Self(0);
    /// Plaintext captured from TLS libraries: a TLS connection is traced only when both this
    /// and its inner protocol are in the set. The top bit; protocols take one bit each from
    /// the bottom, in registry order, so a new protocol needs nothing here.
    pub const TLS: Self = Self(1 << 7);
    pub const HTTP1: Self = Self::of(ProtocolId::Http1);
    /// HTTP/2, gRPC included (gRPC is HTTP/2 on the wire; one parser sees both).
    pub const HTTP2: Self = Self::of(ProtocolId::Http2);
    pub const POSTGRES: Self = Self::of(ProtocolId::Postgres);
    pub const AMQP: Self = Self::of(ProtocolId::Amqp);
    /// Every protocol of the registry, and TLS.
    pub const ALL: Self = {
        assert!(
            ProtocolId::ALL.len() < 8,
            "a protocol bit would collide with TLS"
        );
        let mut bits = Self::TLS.0;
        let mut i = 0;
        while i < ProtocolId::ALL.len() {
            bits |= Self::of(ProtocolId::ALL[i]).0;
            i += 1;
        }
        Self(bits)
    };

    pub const fn union(self, o: Self) -> Self {
        Self(self.0 | o.0)
    }

    pub const fn contains(self, o: Self) -> bool {
        self.0 & o.0 == o.0
    }

    pub const fn is_none(self) -> bool {
        self.0 == 0
    }

    const fn of(p: ProtocolId) -> Self {
        Self(1 << p as u8)
    }

    /// Whether a connection carrying `p` (over TLS when `tls`) is traced.
    pub fn allows(self, p: ProtocolId, tls: bool) -> bool {
        self.contains(Self::of(p)) && (!tls || self.contains(Self::TLS))
    }

    /// The set named by one entry of a `protocols` list: `all`, `none`, `tls`, a protocol's
    /// registry name or one of its aliases.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "all" => Self::ALL,
            "none" => Self::NONE,
            "tls" => Self::TLS,
            _ => Self::of(
                ALIASES
                    .iter()
                    .find(|(a, _)| *a == name)
                    .map(|&(_, p)| p)
                    .or_else(|| ProtocolId::from_name(name))?,
            ),
        })
    }

    /// Every name [`from_name`](Self::from_name) takes, for error messages.
    pub fn names() -> Vec<&'static str> {
        let mut v = vec!["all", "none"];
        v.extend(ALIASES.iter().map(|(a, _)| *a));
        v.extend(ProtocolId::ALL.iter().map(|p| p.name()));
        v.push("tls");
        v
    }

    /// Names, for logs (`all`, `none` or e.g. `http1,postgres`).
    pub fn describe(self) -> String {
        match self {
            Self::ALL => "all".into(),
            Self::NONE => "none".into(),
            s => ProtocolId::ALL
                .iter()
                .filter(|&&p| s.contains(Self::of(p)))
                .map(|p| p.name())
                .chain(s.contains(Self::TLS).then_some("tls"))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}
