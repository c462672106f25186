//! Method frames (spec §4.2.4): class-id, method-id, arguments (§1.4 of the 0-9-1 class
//! reference for their order and types). Decoded: what the message bookkeeping needs, plus the
//! connection handshake's tables (validated, not kept; start-ok's `response` holds the
//! credentials and is never read). The other methods of the spec and RabbitMQ's extensions
//! are recognised by id only: their arguments are skipped with the frame.

use super::wire::{Reader, WireError};

/// Who may send a method (spec class reference, "chassis" of each method; RabbitMQ
/// extensions as RabbitMQ uses them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sender {
    Client,
    Broker,
    Either,
}

pub(super) const CONNECTION: u16 = 10;
pub(super) const CHANNEL: u16 = 20;
const EXCHANGE: u16 = 40;
const QUEUE: u16 = 50;
pub(super) const BASIC: u16 = 60;
const CONFIRM: u16 = 85;
const TX: u16 = 90;

/// Who sends `(class, method)`; `None` for ids that are neither in 0-9-1 nor RabbitMQ's
/// extensions (connection.blocked/unblocked/update-secret, basic.nack, confirm.*,
/// exchange.bind/unbind).
pub(super) fn sender(class: u16, method: u16) -> Option<Sender> {
    use Sender::*;
    Some(match (class, method) {
        // connection: start, secure, tune, open-ok, blocked, unblocked, update-secret
        (CONNECTION, 10 | 20 | 30 | 41 | 60 | 61 | 70) => Broker,
        // start-ok, secure-ok, tune-ok, open, update-secret-ok
        (CONNECTION, 11 | 21 | 31 | 40 | 71) => Client,
        (CONNECTION, 50 | 51) => Either,
        (CHANNEL, 10) => Client,
        (CHANNEL, 11) => Broker,
        (CHANNEL, 20 | 21 | 40 | 41) => Either,
        // exchange.declare, delete, bind, unbind and their -ok (unbind-ok is 51)
        (EXCHANGE, 10 | 20 | 30 | 40) => Client,
        (EXCHANGE, 11 | 21 | 31 | 51) => Broker,
        // queue.declare, bind, purge, delete, unbind
        (QUEUE, 10 | 20 | 30 | 40 | 50) => Client,
        (QUEUE, 11 | 21 | 31 | 41 | 51) => Broker,
        // basic: qos, consume, publish, get, reject, recover-async, recover
        (BASIC, 10 | 20 | 40 | 70 | 90 | 100 | 110) => Client,
        // qos-ok, consume-ok, return, deliver, get-ok, get-empty, recover-ok
        (BASIC, 11 | 21 | 50 | 60 | 71 | 72 | 111) => Broker,
        // cancel (the broker cancels consumers whose queue is deleted), cancel-ok, ack and
        // nack (publisher confirms from the broker, consumer acks from the client)
        (BASIC, 30 | 31 | 80 | 120) => Either,
        (CONFIRM, 10) | (TX, 10 | 20 | 30) => Client,
        (CONFIRM, 11) | (TX, 11 | 21 | 31) => Broker,
        _ => return None,
    })
}

/// A method the parser acts on, borrowing from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method<'a> {
    Tune {
        frame_max: u32,
    },
    TuneOk {
        frame_max: u32,
    },
    ConnectionClose,
    ConnectionCloseOk,
    ChannelOpen,
    ChannelClose,
    ChannelCloseOk,
    Consume {
        consumer_tag: &'a [u8],
        no_ack: bool,
        no_wait: bool,
    },
    ConsumeOk {
        consumer_tag: &'a [u8],
    },
    Cancel {
        consumer_tag: &'a [u8],
    },
    CancelOk {
        consumer_tag: &'a [u8],
    },
    Publish {
        exchange: &'a [u8],
        routing_key: &'a [u8],
    },
    /// basic.return: an unroutable mandatory message comes back with its content.
    Return,
    Deliver {
        consumer_tag: &'a [u8],
        delivery_tag: u64,
        redelivered: bool,
        exchange: &'a [u8],
        routing_key: &'a [u8],
    },
    Get {
        no_ack: bool,
    },
    GetOk {
        delivery_tag: u64,
        redelivered: bool,
        exchange: &'a [u8],
        routing_key: &'a [u8],
    },
    GetEmpty,
    Ack {
        delivery_tag: u64,
        multiple: bool,
    },
    Nack {
        delivery_tag: u64,
        multiple: bool,
        requeue: bool,
    },
    Reject {
        delivery_tag: u64,
        requeue: bool,
    },
    /// basic.recover or recover-async: the broker redelivers every unacknowledged message.
    Recover,
    /// A method with nothing for us (exchange.*, queue.*, tx.*, qos, ...).
    Other,
    /// An id outside 0-9-1 and RabbitMQ's extensions: framing-valid, so only skipped.
    Unknown,
}

/// Decode a method frame's payload. Only truncated or malformed arguments of a method we
/// decode are an error; unknown ids are [`Method::Unknown`].
pub(super) fn decode(payload: &[u8]) -> Result<(u16, u16, Method<'_>), WireError> {
    let mut r = Reader::new(payload);
    let class = r.u16()?;
    let method = r.u16()?;
    if sender(class, method).is_none() {
        return Ok((class, method, Method::Unknown));
    }
    let m = decode_args(class, method, &mut r)?;
    Ok((class, method, m))
}

/// Bit arguments are packed into octets, least significant bit first (spec §4.2.5.2).
fn bit(bits: u8, i: u8) -> bool {
    bits & (1 << i) != 0
}

fn decode_args<'a>(class: u16, method: u16, r: &mut Reader<'a>) -> Result<Method<'a>, WireError> {
    Ok(match (class, method) {
        (CONNECTION, 10) => {
            // start: version-major, version-minor, server-properties, mechanisms, locales
            r.take(2)?;
            r.table()?;
            r.longstr()?;
            r.longstr()?;
            Method::Other
        }
        (CONNECTION, 11) => {
            // start-ok: client-properties, mechanism, response (credentials: skipped
            // unread), locale
            r.table()?;
            r.shortstr()?;
            r.longstr()?;
            r.shortstr()?;
            Method::Other
        }
        (CONNECTION, 30) | (CONNECTION, 31) => {
            // tune / tune-ok: channel-max, frame-max, heartbeat
            r.u16()?;
            let frame_max = r.u32()?;
            r.u16()?;
            if method == 30 {
                Method::Tune { frame_max }
            } else {
                Method::TuneOk { frame_max }
            }
        }
        (CONNECTION, 50) | (CHANNEL, 40) => {
            // close: reply-code, reply-text, class-id, method-id
            r.u16()?;
            r.shortstr()?;
            r.u16()?;
            r.u16()?;
            if class == CONNECTION {
                Method::ConnectionClose
            } else {
                Method::ChannelClose
            }
        }
        (CONNECTION, 51) => Method::ConnectionCloseOk,
        (CHANNEL, 10) => {
            r.shortstr()?; // reserved
            Method::ChannelOpen
        }
        (CHANNEL, 41) => Method::ChannelCloseOk,
        (BASIC, 20) => {
            // consume: reserved-1, queue, consumer-tag, no-local no-ack exclusive no-wait,
            // arguments
            r.u16()?;
            r.shortstr()?;
            let consumer_tag = r.shortstr()?;
            let bits = r.u8()?;
            r.table()?;
            Method::Consume {
                consumer_tag,
                no_ack: bit(bits, 1),
                no_wait: bit(bits, 3),
            }
        }
        (BASIC, 21) => Method::ConsumeOk {
            consumer_tag: r.shortstr()?,
        },
        (BASIC, 30) => Method::Cancel {
            consumer_tag: r.shortstr()?,
        },
        (BASIC, 31) => Method::CancelOk {
            consumer_tag: r.shortstr()?,
        },
        (BASIC, 40) => {
            // publish: reserved-1, exchange, routing-key, mandatory immediate
            r.u16()?;
            let exchange = r.shortstr()?;
            let routing_key = r.shortstr()?;
            r.u8()?;
            Method::Publish {
                exchange,
                routing_key,
            }
        }
        (BASIC, 50) => {
            // return: reply-code, reply-text, exchange, routing-key
            r.u16()?;
            r.shortstr()?;
            r.shortstr()?;
            r.shortstr()?;
            Method::Return
        }
        (BASIC, 60) => {
            // deliver: consumer-tag, delivery-tag, redelivered, exchange, routing-key
            let consumer_tag = r.shortstr()?;
            let delivery_tag = r.u64()?;
            let redelivered = bit(r.u8()?, 0);
            Method::Deliver {
                consumer_tag,
                delivery_tag,
                redelivered,
                exchange: r.shortstr()?,
                routing_key: r.shortstr()?,
            }
        }
        (BASIC, 70) => {
            // get: reserved-1, queue, no-ack
            r.u16()?;
            r.shortstr()?;
            Method::Get {
                no_ack: bit(r.u8()?, 0),
            }
        }
        (BASIC, 71) => {
            // get-ok: delivery-tag, redelivered, exchange, routing-key, message-count
            let delivery_tag = r.u64()?;
            let redelivered = bit(r.u8()?, 0);
            let exchange = r.shortstr()?;
            let routing_key = r.shortstr()?;
            r.u32()?;
            Method::GetOk {
                delivery_tag,
                redelivered,
                exchange,
                routing_key,
            }
        }
        (BASIC, 72) => {
            r.shortstr()?; // reserved (cluster-id)
            Method::GetEmpty
        }
        (BASIC, 80) => {
            let delivery_tag = r.u64()?;
            Method::Ack {
                delivery_tag,
                multiple: bit(r.u8()?, 0),
            }
        }
        (BASIC, 90) => {
            let delivery_tag = r.u64()?;
            Method::Reject {
                delivery_tag,
                requeue: bit(r.u8()?, 0),
            }
        }
        (BASIC, 100) | (BASIC, 110) => {
            r.u8()?; // requeue
            Method::Recover
        }
        (BASIC, 120) => {
            let delivery_tag = r.u64()?;
            let bits = r.u8()?;
            Method::Nack {
                delivery_tag,
                multiple: bit(bits, 0),
                requeue: bit(bits, 1),
            }
        }
        _ => Method::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders() {
        assert_eq!(sender(BASIC, 40), Some(Sender::Client));
        assert_eq!(sender(BASIC, 60), Some(Sender::Broker));
        assert_eq!(sender(BASIC, 80), Some(Sender::Either));
        assert_eq!(sender(CONNECTION, 10), Some(Sender::Broker));
        assert_eq!(sender(EXCHANGE, 51), Some(Sender::Broker));
        assert_eq!(sender(EXCHANGE, 41), None);
        assert_eq!(sender(BASIC, 41), None);
        assert_eq!(sender(70, 10), None); // the 0-9 file class is gone in 0-9-1
    }

    #[test]
    fn decodes_message_methods() {
        let publish = b"\x00\x3c\x00\x28\x00\x00\x02ex\x02rk\x01";
        assert_eq!(
            decode(publish),
            Ok((
                60,
                40,
                Method::Publish {
                    exchange: b"ex",
                    routing_key: b"rk"
                }
            ))
        );
        let deliver = b"\x00\x3c\x00\x3c\x03tag\x00\x00\x00\x00\x00\x00\x01\x00\x01\x00\x01q";
        assert_eq!(
            decode(deliver).map(|d| d.2),
            Ok(Method::Deliver {
                consumer_tag: b"tag",
                delivery_tag: 256,
                redelivered: true,
                exchange: b"",
                routing_key: b"q"
            })
        );
        let nack = b"\x00\x3c\x00\x78\x00\x00\x00\x00\x00\x00\x00\x07\x03";
        assert_eq!(
            decode(nack).map(|d| d.2),
            Ok(Method::Nack {
                delivery_tag: 7,
                multiple: true,
                requeue: true
            })
        );
        let consume = b"\x00\x3c\x00\x14\x00\x00\x01q\x00\x0a\x00\x00\x00\x00";
        assert_eq!(
            decode(consume).map(|d| d.2),
            Ok(Method::Consume {
                consumer_tag: b"",
                no_ack: true,
                no_wait: true
            })
        );
    }

    #[test]
    fn unknown_ids_and_truncation() {
        assert_eq!(decode(b"\x00\x3c\x00\x29"), Ok((60, 41, Method::Unknown)));
        assert_eq!(decode(b"\x00\x3c"), Err(WireError::Truncated));
        assert_eq!(
            decode(b"\x00\x3c\x00\x28\x00\x00\x09ex"),
            Err(WireError::Truncated)
        );
        // Known ids without arguments to decode are fine with any payload.
        assert_eq!(decode(b"\x00\x32\x00\x0a"), Ok((50, 10, Method::Other)));
    }
}
