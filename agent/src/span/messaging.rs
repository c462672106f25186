//! RabbitMQ (AMQP 0-9-1) spans per the OpenTelemetry messaging semantic conventions, and the
//! same-node link from a delivered message back to its publish.
//!
//! Linking: when this node saw a message published (PRODUCER span) and later delivered
//! (CONSUMER span), both copies carry the same content fingerprint (computed by the parser from
//! exchange, routing key, properties, body size and body bytes). [`PublishIndex`] remembers
//! recent publishes by fingerprint for [`LINK_WINDOW_NS`]; a delivery takes the oldest publish
//! of its fingerprint not yet delivered (identical messages published twice pair up in order),
//! and when every one was already delivered, the newest (fan-out to several queues, and
//! redeliveries, deliver one publish several times). Bounded: at most [`MAX_PUBLISHES`]
//! entries, oldest dropped first.

use std::collections::{HashMap, VecDeque};

use super::model::{Attribute, SpanContext, StatusCode};
use super::network::{push_network, push_server_is_peer};
use super::parts::{Exchange, SpanParts};
use crate::protocol::{AmqpMessage, AmqpOperation, AmqpOutcome};

/// How long a publish can wait in a queue and still be linked to its delivery.
pub const LINK_WINDOW_NS: u64 = 10 * 60 * 1_000_000_000;
/// Publishes remembered at once.
pub const MAX_PUBLISHES: usize = 65536;

#[derive(Debug)]
struct Published {
    ctx: SpanContext,
    deliveries: u32,
}

/// Recent publishes by content fingerprint.
#[derive(Debug, Default)]
pub struct PublishIndex {
    by_fp: HashMap<u64, VecDeque<Published>>,
    /// Insertion order, for bounding and expiry: (fingerprint, ts_ns).
    order: VecDeque<(u64, u64)>,
}

impl PublishIndex {
    pub fn record(&mut self, fingerprint: u64, ctx: SpanContext, ts_ns: u64) {
        self.expire(ts_ns);
        while self.order.len() >= MAX_PUBLISHES {
            self.drop_oldest();
        }
        self.by_fp
            .entry(fingerprint)
            .or_default()
            .push_back(Published { ctx, deliveries: 0 });
        self.order.push_back((fingerprint, ts_ns));
    }

    /// The producer context a delivery of `fingerprint` at `ts_ns` belongs to, if any.
    pub fn link(&mut self, fingerprint: u64, ts_ns: u64) -> Option<SpanContext> {
        self.expire(ts_ns);
        let list = self.by_fp.get_mut(&fingerprint)?;
        let p = match list.iter().position(|p| p.deliveries == 0) {
            Some(i) => &mut list[i],
            None => list.back_mut()?,
        };
        p.deliveries += 1;
        Some(p.ctx.clone())
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn expire(&mut self, now_ns: u64) {
        while self
            .order
            .front()
            .is_some_and(|&(_, ts)| now_ns.saturating_sub(ts) > LINK_WINDOW_NS)
        {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        let Some((fp, _)) = self.order.pop_front() else {
            return;
        };
        if let Some(list) = self.by_fp.get_mut(&fp) {
            list.pop_front();
            if list.is_empty() {
                self.by_fp.remove(&fp);
            }
        }
    }
}

/// The span of one message published, delivered or got.
pub(super) fn span(m: &AmqpMessage, outcome: AmqpOutcome, ex: &Exchange<'_>) -> SpanParts {
    // The destination is the exchange; on the default exchange the routing key names the
    // queue, which is then the destination (what users asked for: the RabbitMQ conventions
    // would leave it empty, which says nothing).
    let destination = if m.exchange.is_empty() {
        m.routing_key.as_str()
    } else {
        m.exchange.as_str()
    };
    let (op_type, op_name) = match m.operation {
        AmqpOperation::Publish => ("send", "publish"),
        AmqpOperation::Deliver => ("process", "deliver"),
        AmqpOperation::Get => ("receive", "get"),
    };
    let mut attrs = Vec::with_capacity(20);
    attrs.push(Attribute::new("messaging.system", "rabbitmq"));
    attrs.push(Attribute::new("messaging.operation.type", op_type));
    attrs.push(Attribute::new("messaging.operation.name", op_name));
    attrs.push(Attribute::new("messaging.destination.name", destination));
    attrs.push(Attribute::new(
        "messaging.rabbitmq.destination.routing_key",
        m.routing_key.as_str(),
    ));
    if let Some(id) = &m.message_id {
        attrs.push(Attribute::new("messaging.message.id", id.as_str()));
    }
    if let Some(c) = &m.correlation_id {
        attrs.push(Attribute::new(
            "messaging.message.conversation_id",
            c.as_str(),
        ));
    }
    attrs.push(Attribute::new(
        "messaging.message.body.size",
        m.body_size as i64,
    ));
    if let Some(tag) = m.delivery_tag {
        attrs.push(Attribute::new(
            "messaging.rabbitmq.message.delivery_tag",
            tag as i64,
        ));
    }
    if m.redelivered {
        attrs.push(Attribute::new(
            "messaging.rabbitmq.message.redelivered",
            true,
        ));
    }
    push_server_is_peer(&mut attrs, ex.meta);
    push_network(&mut attrs, ex.meta);
    let (status, message) = match outcome {
        AmqpOutcome::Sent | AmqpOutcome::Acked | AmqpOutcome::Received => (StatusCode::Unset, None),
        AmqpOutcome::Rejected { requeue } => {
            attrs.push(Attribute::new(
                "error.type",
                if requeue {
                    "rejected_requeued"
                } else {
                    "rejected"
                },
            ));
            (
                StatusCode::Error,
                Some("message rejected by the consumer".to_owned()),
            )
        }
        AmqpOutcome::Aborted => {
            attrs.push(Attribute::new("error.type", "channel_closed"));
            (
                StatusCode::Error,
                Some("channel closed before the message was settled".to_owned()),
            )
        }
    };
    // Conventions: `{messaging.operation.name} {destination}`.
    let name = format!("{op_name} {destination}");
    SpanParts {
        name,
        status,
        status_message: message,
        attributes: attrs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::context::{new_span_id, new_trace_id};

    fn ctx() -> SpanContext {
        SpanContext {
            trace_id: new_trace_id(),
            span_id: new_span_id(),
            flags: 1,
            trace_state: None,
        }
    }

    #[test]
    fn duplicates_pair_in_order_fanout_and_redelivery_share() {
        let mut idx = PublishIndex::default();
        let (a, b) = (ctx(), ctx());
        idx.record(7, a.clone(), 10);
        idx.record(7, b.clone(), 20);
        assert_eq!(idx.link(7, 30), Some(a));
        assert_eq!(idx.link(7, 40), Some(b.clone()));
        // A third delivery of the same content (fan-out or redelivery): the newest publish.
        assert_eq!(idx.link(7, 50), Some(b));
        assert_eq!(idx.link(8, 50), None);
    }

    #[test]
    fn bounded_and_expiring() {
        let mut idx = PublishIndex::default();
        idx.record(1, ctx(), 0);
        assert!(idx.link(1, LINK_WINDOW_NS + 1).is_none(), "expired");
        assert!(idx.is_empty());
        for i in 0..(MAX_PUBLISHES as u64 + 10) {
            idx.record(i, ctx(), 100);
        }
        assert_eq!(idx.len(), MAX_PUBLISHES);
        assert!(idx.link(0, 100).is_none(), "oldest dropped");
        assert!(idx.link(MAX_PUBLISHES as u64 + 9, 100).is_some());
    }
}
