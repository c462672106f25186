//! What the frames of both directions mean together: channels, the message each peer is
//! sending on each channel, consumers and their ack mode, outstanding basic.gets, deliveries
//! awaiting an ack, the negotiated frame-max, and the events all of this produces.
//!
//! Memory is bounded: at most `MAX_CHANNELS` channels, `MAX_CONSUMERS` consumer tags,
//! `MAX_UNACKED_PER_CHANNEL` / `MAX_UNACKED` unsettled deliveries (the oldest are aborted to
//! make room), `MAX_FIFO` outstanding basic.get / consume requests per channel. Each cut is
//! reported as [`ParseError::Limited`].
//!
//! Work is bounded too: nothing costs a pass over every channel per frame. A peer can lose
//! sync every 15 bytes (a heartbeat, then a broken frame), so losing sync visits only the
//! channels that gained state since that peer last lost it (`dirty`), not all 2048; and the
//! connection-wide unacked bound, which must find the channel holding the most, evicts a
//! batch per search (`EVICT_BATCH`).

use std::collections::{HashMap, VecDeque};

use super::super::{AmqpOutcome, L7Event, Outcome, ParseError, Request};
use super::content::{decode_header, Kind, Partial};
use super::frame::{self, channel_fits, sender_allows, DEFAULT_FRAME_MAX};
use super::method::{self, Method};
use super::unacked::Unacked;
use super::{error, Io, Peer, Start};

/// Channels tracked per connection. RabbitMQ's default channel-max is 2047.
pub(super) const MAX_CHANNELS: usize = 2048;
/// Consumer tags remembered per connection (a consumer whose tag was forgotten is assumed to
/// use manual acks).
const MAX_CONSUMERS: usize = 1024;
/// Unsettled deliveries per channel, and per connection.
pub(super) const MAX_UNACKED_PER_CHANNEL: usize = 10_000;
pub(super) const MAX_UNACKED: usize = 32_768;
/// Outstanding basic.get and consume (awaiting consume-ok) requests per channel. Both are
/// synchronous, so a client has one in flight unless it pipelines.
const MAX_FIFO: usize = 64;
/// Deliveries aborted at once when `MAX_UNACKED` is exceeded (at most all of the channel
/// holding the most, which holds more than `MAX_UNACKED / MAX_CHANNELS`): the search for that
/// channel is a pass over the channels, so it is paid once per batch, not per delivery.
pub(super) const EVICT_BATCH: usize = 64;

fn limited(what: &'static str) -> ParseError {
    ParseError::Limited {
        protocol: crate::protocol::ProtocolId::Amqp,
        what,
    }
}

/// What one peer is sending on one channel.
#[derive(Debug, Default)]
enum Content {
    #[default]
    Idle,
    /// A content method arrived; its header frame is next.
    Header(Box<Partial>),
    /// Header done; body frames until `body_remaining` is 0.
    Body(Box<Partial>),
    /// Content we do not report (basic.return, an unusable header, a gap): its frames are
    /// skipped silently until the next method frame on the channel.
    Discard,
}

#[derive(Debug, Default)]
struct Channel {
    /// Indexed by `Peer`.
    content: [Content; 2],
    /// Consumers started on this channel: tag → no-ack. A map, as every delivery looks its
    /// tag up: with up to `MAX_CONSUMERS` tags of 255 bytes, a list cost a pass comparing
    /// them all per delivery.
    consumers: HashMap<Box<[u8]>, bool>,
    /// no-ack of basic.consume requests with a broker-chosen tag, awaiting consume-ok.
    awaiting_tag: VecDeque<bool>,
    /// no-ack of basic.get requests awaiting get-ok / get-empty.
    gets: VecDeque<bool>,
    unacked: Unacked,
}

/// Queue `v`, dropping the oldest when full. False when one was dropped.
fn push_bounded(q: &mut VecDeque<bool>, v: bool) -> bool {
    let room = q.len() < MAX_FIFO;
    if !room {
        q.pop_front();
    }
    q.push_back(v);
    room
}

#[derive(Debug)]
pub(super) struct Session {
    channels: HashMap<u16, Channel>,
    consumers: usize,
    unacked: usize,
    next_seq: u64,
    payload_limit: u32,
    /// Reused for the seqs a settlement ends (no allocation per ack).
    scratch: Vec<u64>,
    /// Per peer, the channels that may hold state a lost sync of that peer clears (content
    /// being sent, outstanding requests, for the client unsettled deliveries) because they
    /// gained some since its last loss; unsorted, may repeat ids and name channels gone since.
    dirty: [Vec<u16>; 2],
    /// Channels visited by `lost_sync` (a work measure for tests).
    #[cfg(test)]
    visited: u64,
}

impl Session {
    pub(super) fn new() -> Self {
        Self {
            channels: HashMap::new(),
            consumers: 0,
            unacked: 0,
            next_seq: 0,
            payload_limit: frame::payload_limit(DEFAULT_FRAME_MAX),
            scratch: Vec::new(),
            dirty: [Vec::new(), Vec::new()],
            #[cfg(test)]
            visited: 0,
        }
    }

    /// `channel` gained state that `lost_sync(peer)` must clear.
    fn mark(&mut self, peer: Peer, channel: u16) {
        let Self {
            dirty, channels, ..
        } = self;
        let list = &mut dirty[peer as usize];
        if list.last() == Some(&channel) {
            return;
        }
        list.push(channel);
        if list.len() > 2 * MAX_CHANNELS {
            // Bounded without a loss of sync: amortised over MAX_CHANNELS marks.
            list.sort_unstable();
            list.dedup();
            list.retain(|id| channels.contains_key(id));
        }
    }

    /// `channel` queued a request (get, consume): either peer's loss forgets it.
    fn mark_both(&mut self, channel: u16) {
        self.mark(Peer::Client, channel);
        self.mark(Peer::Broker, channel);
    }

    /// Largest frame payload the negotiated frame-max allows.
    pub(super) fn payload_limit(&self) -> u32 {
        self.payload_limit
    }

    /// The channel, created if there is room (channel 0 carries no messages: never created).
    fn channel(&mut self, id: u16) -> Option<&mut Channel> {
        if id == 0 {
            return None;
        }
        let room = self.channels.len() < MAX_CHANNELS;
        match self.channels.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => Some(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) if room => {
                Some(e.insert(Channel::default()))
            }
            std::collections::hash_map::Entry::Vacant(_) => None,
        }
    }

    /// A method frame from `peer` on `channel`; `start` is where its first byte was seen.
    pub(super) fn method(
        &mut self,
        peer: Peer,
        channel: u16,
        payload: &[u8],
        start: Start,
        io: &mut Io,
    ) {
        // A method frame ends whatever content the peer was sending on the channel (spec
        // §4.2.6: content frames follow their method without other frames of that channel).
        if let Some(ch) = self.channels.get_mut(&channel) {
            if let Content::Header(_) | Content::Body(_) =
                std::mem::take(&mut ch.content[peer as usize])
            {
                io.errors.push(error(
                    "content",
                    "method frame before the content was complete",
                ));
            }
        }
        let (class, id, m) = match method::decode(payload) {
            Ok(decoded) => decoded,
            Err(e) => {
                io.errors.push(error("method", format!("arguments: {e}")));
                // Had it been a content method, its content must not look like an orphan.
                self.discard(peer, channel);
                return;
            }
        };
        if !sender_allows(method::sender(class, id), peer)
            || (m != Method::Unknown && !channel_fits(class, channel))
        {
            io.errors.push(error(
                "method",
                format!("{class}.{id} from the {peer:?} on channel {channel}"),
            ));
            self.discard(peer, channel);
            return;
        }
        let now = io.ctx.last_ns;
        match (peer, m) {
            (Peer::Broker, Method::Tune { frame_max })
            | (Peer::Client, Method::TuneOk { frame_max }) => {
                self.payload_limit = frame::payload_limit(frame_max);
            }
            (_, Method::ConnectionClose | Method::ConnectionCloseOk) => self.abort_all(now, io.out),
            (_, Method::ChannelOpen | Method::ChannelClose | Method::ChannelCloseOk) => {
                self.reset_channel(channel, now, io.out);
            }
            (
                Peer::Client,
                Method::Consume {
                    consumer_tag,
                    no_ack,
                    no_wait,
                },
            ) => {
                if !consumer_tag.is_empty() {
                    self.add_consumer(channel, consumer_tag, no_ack, io);
                } else if !no_wait {
                    if let Some(ch) = self.channel(channel) {
                        if !push_bounded(&mut ch.awaiting_tag, no_ack) {
                            io.errors.push(limited("consume requests beyond MAX_FIFO"));
                        }
                        self.mark_both(channel);
                    }
                }
            }
            (Peer::Broker, Method::ConsumeOk { consumer_tag }) => {
                let known = self
                    .channels
                    .get(&channel)
                    .is_some_and(|ch| ch.consumers.contains_key(consumer_tag));
                if !known {
                    if let Some(no_ack) = self
                        .channel(channel)
                        .and_then(|ch| ch.awaiting_tag.pop_front())
                    {
                        self.add_consumer(channel, consumer_tag, no_ack, io);
                    }
                }
            }
            // The broker cancels consumers itself (queue deleted) or confirms a cancel; the
            // client's basic.cancel alone does not stop deliveries already on their way.
            (Peer::Broker, Method::Cancel { consumer_tag } | Method::CancelOk { consumer_tag }) => {
                if let Some(ch) = self.channels.get_mut(&channel) {
                    if ch.consumers.remove(consumer_tag).is_some() {
                        self.consumers = self.consumers.saturating_sub(1);
                    }
                }
            }
            (
                Peer::Client,
                Method::Publish {
                    exchange,
                    routing_key,
                },
            ) => {
                let p = Partial::new(
                    Kind::Publish,
                    channel,
                    start,
                    exchange,
                    routing_key,
                    None,
                    false,
                );
                self.begin(peer, channel, p, io);
            }
            (
                Peer::Broker,
                Method::Deliver {
                    consumer_tag,
                    delivery_tag,
                    redelivered,
                    exchange,
                    routing_key,
                },
            ) => {
                // A consumer we did not see start (we joined later) is assumed to ack manually:
                // the span then ends at the ack, or aborted, rather than never.
                let no_ack = self
                    .channels
                    .get(&channel)
                    .and_then(|ch| ch.consumers.get(consumer_tag))
                    .is_some_and(|no_ack| *no_ack);
                let kind = Kind::Deliver { no_ack };
                let p = Partial::new(
                    kind,
                    channel,
                    start,
                    exchange,
                    routing_key,
                    Some(delivery_tag),
                    redelivered,
                );
                self.begin(peer, channel, p, io);
            }
            (
                Peer::Broker,
                Method::GetOk {
                    delivery_tag,
                    redelivered,
                    exchange,
                    routing_key,
                },
            ) => {
                let no_ack = self
                    .channel(channel)
                    .and_then(|ch| ch.gets.pop_front())
                    .unwrap_or(false);
                let kind = Kind::Get { no_ack };
                let p = Partial::new(
                    kind,
                    channel,
                    start,
                    exchange,
                    routing_key,
                    Some(delivery_tag),
                    redelivered,
                );
                self.begin(peer, channel, p, io);
            }
            (Peer::Broker, Method::GetEmpty) => {
                if let Some(ch) = self.channels.get_mut(&channel) {
                    ch.gets.pop_front();
                }
            }
            (Peer::Client, Method::Get { no_ack }) => {
                if let Some(ch) = self.channel(channel) {
                    if !push_bounded(&mut ch.gets, no_ack) {
                        io.errors
                            .push(limited("basic.get requests beyond MAX_FIFO"));
                    }
                    self.mark_both(channel);
                }
            }
            // The client settles deliveries; the broker's ack/nack are publisher confirms
            // (they settle publishes, whose spans ended when sent).
            (
                Peer::Client,
                Method::Ack {
                    delivery_tag,
                    multiple,
                },
            ) => {
                self.settle(
                    channel,
                    delivery_tag,
                    multiple,
                    AmqpOutcome::Acked,
                    now,
                    io.out,
                );
            }
            (
                Peer::Client,
                Method::Nack {
                    delivery_tag,
                    multiple,
                    requeue,
                },
            ) => {
                self.settle(
                    channel,
                    delivery_tag,
                    multiple,
                    AmqpOutcome::Rejected { requeue },
                    now,
                    io.out,
                );
            }
            (
                Peer::Client,
                Method::Reject {
                    delivery_tag,
                    requeue,
                },
            ) => {
                self.settle(
                    channel,
                    delivery_tag,
                    false,
                    AmqpOutcome::Rejected { requeue },
                    now,
                    io.out,
                );
            }
            // basic.recover: the broker redelivers every unacked message of the channel (with
            // new tags). Whatever the requeue flag, RabbitMQ requeues them (errata, "basic.recover
            // with requeue=false"): the consumer handed them back.
            (Peer::Client, Method::Recover) => {
                let outcome = AmqpOutcome::Rejected { requeue: true };
                self.settle(channel, 0, true, outcome, now, io.out);
            }
            // An unknown method might carry content: swallow it quietly.
            (_, Method::Unknown) | (Peer::Broker, Method::Return) => self.discard(peer, channel),
            _ => {}
        }
    }

    fn begin(&mut self, peer: Peer, channel: u16, p: Partial, io: &mut Io) {
        match self.channel(channel) {
            Some(ch) => {
                ch.content[peer as usize] = Content::Header(Box::new(p));
                self.mark(peer, channel);
            }
            None => io
                .errors
                .push(limited("messages on channels beyond MAX_CHANNELS")),
        }
    }

    /// Skip whatever content `peer` sends next on `channel`, silently.
    pub(super) fn discard(&mut self, peer: Peer, channel: u16) {
        if let Some(ch) = self.channel(channel) {
            ch.content[peer as usize] = Content::Discard;
        }
    }

    fn add_consumer(&mut self, channel: u16, tag: &[u8], no_ack: bool, io: &mut Io) {
        let full = self.consumers >= MAX_CONSUMERS;
        let Some(ch) = self.channel(channel) else {
            return;
        };
        if let Some(c) = ch.consumers.get_mut(tag) {
            *c = no_ack;
        } else if !full {
            ch.consumers.insert(tag.into(), no_ack);
            self.consumers += 1;
        } else {
            io.errors
                .push(limited("consumer tags beyond MAX_CONSUMERS"));
        }
    }

    /// A content header frame.
    pub(super) fn header(
        &mut self,
        peer: Peer,
        channel: u16,
        payload: &[u8],
        strict: bool,
        io: &mut Io,
    ) {
        if channel == 0 {
            io.errors
                .push(error("content", "content header on channel 0"));
            return;
        }
        let full = self.channels.len() >= MAX_CHANNELS;
        let Some(ch) = self.channels.get_mut(&channel) else {
            // With the table full, the method was reported already.
            orphan(strict && !full, io);
            return;
        };
        let slot = &mut ch.content[peer as usize];
        let mut p = match std::mem::replace(slot, Content::Discard) {
            Content::Header(p) => p,
            Content::Body(_) => {
                io.errors.push(error("content", "second content header"));
                return;
            }
            Content::Discard => return,
            Content::Idle => {
                orphan(strict, io);
                return;
            }
        };
        let headers_error = match decode_header(payload)
            .map_err(Into::into)
            .and_then(|h| p.header(&h))
        {
            Ok(e) => e,
            Err(e) => {
                io.errors.push(error("content", e.to_string()));
                return;
            }
        };
        if let Some(e) = headers_error {
            // The message is still reported, without trace context.
            io.errors.push(error("headers table", e.to_string()));
        }
        if p.body_remaining() == 0 {
            *slot = Content::Idle;
            self.complete(*p, io);
        } else {
            *slot = Content::Body(p);
        }
    }

    /// A body frame of `size` bytes begins. True when its bytes belong to a message being
    /// assembled (feed them to `body`); false to skip them.
    pub(super) fn body_start(
        &mut self,
        peer: Peer,
        channel: u16,
        size: u32,
        strict: bool,
        io: &mut Io,
    ) -> bool {
        if channel == 0 {
            io.errors.push(error("content", "body frame on channel 0"));
            return false;
        }
        let full = self.channels.len() >= MAX_CHANNELS;
        let Some(ch) = self.channels.get_mut(&channel) else {
            orphan(strict && !full, io);
            return false;
        };
        let slot = &mut ch.content[peer as usize];
        match slot {
            Content::Body(p) if u64::from(size) <= p.body_remaining() => return true,
            Content::Body(_) => io.errors.push(error(
                "content",
                "body frames exceed the declared body size",
            )),
            Content::Header(_) => io
                .errors
                .push(error("content", "body frame before the content header")),
            Content::Discard => return false,
            Content::Idle => orphan(strict, io),
        }
        *slot = Content::Discard;
        false
    }

    fn body_partial(&mut self, peer: Peer, channel: u16) -> Option<&mut Partial> {
        match &mut self.channels.get_mut(&channel)?.content[peer as usize] {
            Content::Body(p) => Some(p),
            _ => None,
        }
    }

    pub(super) fn body(&mut self, peer: Peer, channel: u16, bytes: &[u8]) {
        if let Some(p) = self.body_partial(peer, channel) {
            p.body(bytes);
        }
    }

    pub(super) fn body_gap(&mut self, peer: Peer, channel: u16, n: u64) {
        if let Some(p) = self.body_partial(peer, channel) {
            p.body_gap(n);
        }
    }

    /// A body frame ended (frame-end checked): the message may be complete.
    pub(super) fn body_end(&mut self, peer: Peer, channel: u16, io: &mut Io) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        let slot = &mut ch.content[peer as usize];
        if matches!(slot, Content::Body(p) if p.body_remaining() == 0) {
            if let Content::Body(p) = std::mem::take(slot) {
                self.complete(*p, io);
            }
        }
    }

    /// A message is complete: report it, and end it now or when it is settled.
    fn complete(&mut self, p: Partial, io: &mut Io) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let (kind, channel, start) = (p.kind, p.channel, p.start);
        let msg = p.into_message();
        let tag = msg.delivery_tag.unwrap_or(0);
        io.out.push(L7Event::RequestStart {
            seq,
            tid: start.tid,
            goroutine: start.goroutine,
            start_ns: start.first_ns,
            request: Request::Amqp(msg),
        });
        let now = io.ctx.last_ns;
        match kind {
            Kind::Publish => end(io.out, seq, now, AmqpOutcome::Sent),
            Kind::Deliver { no_ack: true } | Kind::Get { no_ack: true } => {
                end(io.out, seq, now, AmqpOutcome::Received)
            }
            Kind::Deliver { no_ack: false } | Kind::Get { no_ack: false } => {
                self.track(channel, tag, seq, io)
            }
        }
    }

    /// Wait for the consumer to settle delivery `tag`.
    fn track(&mut self, channel: u16, tag: u64, seq: u64, io: &mut Io) {
        let (now, out) = (io.ctx.last_ns, &mut *io.out);
        let Some(ch) = self.channels.get_mut(&channel) else {
            end(out, seq, now, AmqpOutcome::Aborted);
            return;
        };
        match ch.unacked.insert(tag, seq) {
            Some(old) => end(out, old, now, AmqpOutcome::Aborted),
            None => self.unacked += 1,
        }
        if ch.unacked.len() > MAX_UNACKED_PER_CHANNEL {
            if let Some(old) = ch.unacked.pop_oldest() {
                self.unacked = self.unacked.saturating_sub(1);
                end(out, old, now, AmqpOutcome::Aborted);
                io.errors.push(limited(
                    "unsettled deliveries beyond MAX_UNACKED_PER_CHANNEL",
                ));
            }
        }
        self.mark(Peer::Client, channel);
        if self.unacked > MAX_UNACKED {
            // Make room at the expense of the channel holding the most: a batch of its
            // oldest, so that this pass over the channels is not made for every delivery.
            if let Some(ch) = self.channels.values_mut().max_by_key(|c| c.unacked.len()) {
                for _ in 0..EVICT_BATCH {
                    let Some(old) = ch.unacked.pop_oldest() else {
                        break;
                    };
                    self.unacked = self.unacked.saturating_sub(1);
                    end(io.out, old, now, AmqpOutcome::Aborted);
                }
            }
            io.errors
                .push(limited("unsettled deliveries beyond MAX_UNACKED"));
        }
    }

    fn settle(
        &mut self,
        channel: u16,
        tag: u64,
        multiple: bool,
        outcome: AmqpOutcome,
        now: u64,
        out: &mut Vec<L7Event>,
    ) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        self.scratch.clear();
        ch.unacked.settle(tag, multiple, &mut self.scratch);
        self.unacked = self.unacked.saturating_sub(self.scratch.len());
        for &seq in &self.scratch {
            end(out, seq, now, outcome);
        }
    }

    /// The channel was opened, or closed by either peer: its deliveries can no longer be
    /// settled (RabbitMQ requeues them), its consumers and requests are gone.
    fn reset_channel(&mut self, channel: u16, now: u64, out: &mut Vec<L7Event>) {
        if let Some(mut ch) = self.channels.remove(&channel) {
            self.consumers = self.consumers.saturating_sub(ch.consumers.len());
            self.scratch.clear();
            ch.unacked.drain(&mut self.scratch);
            self.unacked = self.unacked.saturating_sub(self.scratch.len());
            for &seq in &self.scratch {
                end(out, seq, now, AmqpOutcome::Aborted);
            }
        }
    }

    /// Abort every unsettled delivery (channels in ascending order, deliveries oldest first)
    /// and forget all channel state.
    pub(super) fn abort_all(&mut self, now: u64, out: &mut Vec<L7Event>) {
        let mut ids: Vec<u16> = self.channels.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.reset_channel(id, now, out);
        }
        for list in &mut self.dirty {
            list.clear();
        }
    }

    /// `peer`'s stream lost sync (a capture gap or garbage): its frames in between are
    /// unknown. The messages it was sending are dropped; requests it may have answered or
    /// made are forgotten; and when the client's frames are lost, an ack may be among them,
    /// so every unsettled delivery is aborted rather than left to end at some later ack.
    ///
    /// Only the channels marked `dirty` for `peer` can hold any of that (every other one was
    /// cleared by the previous loss and gained nothing since): they are visited in ascending
    /// order, so deliveries are aborted channel by channel as before.
    pub(super) fn lost_sync(&mut self, peer: Peer, now: u64, out: &mut Vec<L7Event>) {
        let mut ids = std::mem::take(&mut self.dirty[peer as usize]);
        ids.sort_unstable();
        ids.dedup();
        for &id in &ids {
            let Some(ch) = self.channels.get_mut(&id) else {
                continue;
            };
            #[cfg(test)]
            {
                self.visited += 1;
            }
            if peer == Peer::Client {
                self.scratch.clear();
                ch.unacked.drain(&mut self.scratch);
                self.unacked = self.unacked.saturating_sub(self.scratch.len());
                for &seq in &self.scratch {
                    end(out, seq, now, AmqpOutcome::Aborted);
                }
            }
            if let Content::Header(_) | Content::Body(_) = ch.content[peer as usize] {
                ch.content[peer as usize] = Content::Discard;
            }
            ch.awaiting_tag.clear();
            ch.gets.clear();
        }
        // Keep the allocation for the next marks.
        ids.clear();
        self.dirty[peer as usize] = ids;
    }

    #[cfg(test)]
    pub(super) fn unacked(&self) -> usize {
        self.unacked
    }

    #[cfg(test)]
    pub(super) fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Channels `lost_sync` visited so far, and the ids marked dirty now (per peer).
    #[cfg(test)]
    pub(super) fn sync_work(&self) -> (u64, [usize; 2]) {
        (self.visited, [self.dirty[0].len(), self.dirty[1].len()])
    }
}

/// A content frame with no method before it. At a trusted point of the stream that is a
/// protocol error; after joining midway or resyncing it is the tail of a message whose method
/// we missed.
fn orphan(strict: bool, io: &mut Io) {
    if strict {
        io.errors
            .push(error("content", "content frame without a content method"));
    }
}

fn end(out: &mut Vec<L7Event>, seq: u64, end_ns: u64, outcome: AmqpOutcome) {
    out.push(L7Event::ExchangeEnd {
        seq,
        end_ns,
        outcome: Outcome::Amqp(outcome),
    });
}
