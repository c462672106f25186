//! [`ProtocolSet`]: which protocols are traced for a process (decided by the `selection`
//! config), as bits, so the per-process cache on the data path holds a `Copy` value.

use super::ProtocolId;

/// A set of traced protocols, as bits (Copy, for the per-pid cache on the data path).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProtocolSet(u8);

impl ProtocolSet {
    pub const NONE: Self = Self(0);
    pub const HTTP1: Self = Self(1);
    /// HTTP/2, gRPC included (gRPC is HTTP/2 on the wire; one parser sees both).
    pub const HTTP2: Self = Self(2);
    pub const POSTGRES: Self = Self(4);
    pub const AMQP: Self = Self(8);
    /// Plaintext captured from TLS libraries: a TLS connection is traced only when both this
    /// and its inner protocol are in the set.
    pub const TLS: Self = Self(16);
    pub const ALL: Self = Self(31);

    pub const fn union(self, o: Self) -> Self {
        Self(self.0 | o.0)
    }

    pub const fn contains(self, o: Self) -> bool {
        self.0 & o.0 == o.0
    }

    pub const fn is_none(self) -> bool {
        self.0 == 0
    }

    fn of(p: ProtocolId) -> Self {
        match p {
            ProtocolId::Http1 => Self::HTTP1,
            ProtocolId::Http2 => Self::HTTP2,
            ProtocolId::Postgres => Self::POSTGRES,
            ProtocolId::Amqp => Self::AMQP,
        }
    }

    /// Whether a connection carrying `p` (over TLS when `tls`) is traced.
    pub fn allows(self, p: ProtocolId, tls: bool) -> bool {
        self.contains(Self::of(p)) && (!tls || self.contains(Self::TLS))
    }

    /// The set named by one entry of a `protocols` list.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "all" => Self::ALL,
            "none" => Self::NONE,
            "http" => Self::HTTP1,
            "http2" | "grpc" => Self::HTTP2,
            "postgres" => Self::POSTGRES,
            "amqp" => Self::AMQP,
            "tls" => Self::TLS,
            _ => return None,
        })
    }

    /// Names, for logs (`all`, `none` or e.g. `http,postgres`).
    pub fn describe(self) -> String {
        match self {
            Self::ALL => "all".into(),
            Self::NONE => "none".into(),
            s => [
                (Self::HTTP1, "http"),
                (Self::HTTP2, "http2"),
                (Self::POSTGRES, "postgres"),
                (Self::AMQP, "amqp"),
                (Self::TLS, "tls"),
            ]
            .iter()
            .filter(|(b, _)| s.contains(*b))
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(","),
        }
    }
}
