//! One subscriber connection to a node on behalf of one client.
//!
//! A task owns the connection: it writes the (un)subscribe commands the client's session
//! hands it and turns what the node sends into [`Event`]s. A command that the session must
//! see confirmed is followed by a `PING`; the node answers in order, so its `pong` means every
//! earlier command took effect. Messages count against the client's output limit the moment
//! they are read; past the limit the task trips the client's overflow token and stops.

use crate::protocol::request::encode_command;
use crate::protocol::scan::{self, ReplyScanner};
use crate::upstream::Settings;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// What a subscriber connection reports to the client's session.
#[derive(Debug)]
pub enum Event {
    /// A `message`, `pmessage` or `smessage`, framed as the node sent it.
    Message {
        /// `message`, `pmessage` or `smessage`.
        kind: Bytes,
        /// The channel (or, for `pmessage`, the pattern) it was delivered for.
        name: Bytes,
        /// The whole frame, for the client.
        raw: Bytes,
    },
    /// The node dropped a shard channel on its own: the channel's slot left the node.
    ShardDropped {
        /// The connection.
        conn: u64,
        /// The channel.
        channel: Bytes,
    },
    /// The node refused a command (`-MOVED` for a shard channel whose slot moved).
    Refused {
        /// The connection.
        conn: u64,
        /// The error reply.
        error: Bytes,
    },
    /// The connection could not be opened or ended.
    Closed {
        /// The connection.
        conn: u64,
    },
}

/// What the session hands the connection: a command, and whom to tell once it took effect.
type Command = (Bytes, Option<oneshot::Sender<()>>);

/// The session's handle on one subscriber connection; dropping it closes the connection.
#[derive(Debug)]
pub struct SubConn {
    /// Tells this connection's events apart from those of connections it replaced.
    pub id: u64,
    /// The node.
    pub addr: Arc<str>,
    commands: mpsc::UnboundedSender<Command>,
}

/// What a connection task needs from its client's session.
#[derive(Debug, Clone)]
pub struct Sink {
    /// Where events go.
    pub events: mpsc::UnboundedSender<Event>,
    /// Bytes of messages read but not yet written to the client.
    pub queued: Arc<AtomicUsize>,
    /// The most `queued` may reach.
    pub limit: usize,
    /// Tripped when `queued` passes `limit`: the session disconnects the client.
    pub overflow: CancellationToken,
}

impl SubConn {
    /// Starts a connection task to `addr`. With `notifications_only` it passes on only
    /// keyspace notifications (a master's own; see [`super::local`]).
    pub fn open(
        id: u64,
        addr: &str,
        settings: Arc<Settings>,
        sink: Sink,
        notifications_only: bool,
    ) -> SubConn {
        let addr: Arc<str> = addr.into();
        let (commands, rx) = mpsc::unbounded_channel();
        let task = Task {
            id,
            addr: addr.clone(),
            settings,
            sink,
            notifications_only,
        };
        tokio::spawn(run(task, rx));
        SubConn { id, addr, commands }
    }

    /// Sends `args`; `done` fires once the node has acted on them.
    pub fn send(&self, args: &[&[u8]], done: Option<oneshot::Sender<()>>) {
        let _ = self.commands.send((encode_command(args), done));
    }
}

const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// How keyspace and keyevent notifications' channels begin.
pub const NOTIFICATION_PREFIXES: [&[u8]; 2] = [b"__keyspace@", b"__keyevent@"];

/// True when `channel` is a keyspace or keyevent notification's channel.
pub fn is_notification(channel: &[u8]) -> bool {
    NOTIFICATION_PREFIXES.iter().any(|p| channel.starts_with(p))
}

/// What a connection task is.
struct Task {
    id: u64,
    addr: Arc<str>,
    settings: Arc<Settings>,
    sink: Sink,
    notifications_only: bool,
}

async fn run(task: Task, mut commands: mpsc::UnboundedReceiver<Command>) {
    let Task {
        id,
        addr,
        settings,
        sink,
        notifications_only,
    } = task;
    let stream = match crate::upstream::connection::connect(&addr, &settings).await {
        Ok(stream) => stream,
        Err(error) => {
            tracing::debug!(node = %addr, %error, "subscriber connection failed");
            let _ = sink.events.send(Event::Closed { conn: id });
            return;
        }
    };
    let (mut reader, mut writer) = stream.into_split();
    let mut waiting: VecDeque<oneshot::Sender<()>> = VecDeque::new();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut scanner = ReplyScanner::default();
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some((payload, done)) = command else { return };
                let mut out = BytesMut::from(&payload[..]);
                if let Some(done) = done {
                    out.extend_from_slice(PING);
                    waiting.push_back(done);
                }
                if crate::io::write_out(&mut writer, &out).await.is_err() {
                    break;
                }
            }
            read = reader.read_buf(&mut buf) => {
                if !matches!(read, Ok(n) if n > 0) {
                    break;
                }
                loop {
                    let len = match scanner.scan(&buf) {
                        Ok(Some(len)) => len,
                        Ok(None) => break,
                        Err(_) => {
                            let _ = sink.events.send(Event::Closed { conn: id });
                            return;
                        }
                    };
                    let frame = buf.split_to(len).freeze();
                    if !deliver(id, frame, &sink, &mut waiting, notifications_only) {
                        return;
                    }
                }
                if buf.capacity() - buf.len() < 4096 {
                    buf.reserve(16 * 1024);
                }
            }
        }
    }
    let _ = sink.events.send(Event::Closed { conn: id });
}

/// Turns one frame from the node into an event; `false` when the client overflowed.
fn deliver(
    id: u64,
    frame: Bytes,
    sink: &Sink,
    waiting: &mut VecDeque<oneshot::Sender<()>>,
    notifications_only: bool,
) -> bool {
    if frame.starts_with(b"-") {
        let _ = sink.events.send(Event::Refused {
            conn: id,
            error: frame,
        });
        return true;
    }
    if frame.starts_with(b"+PONG") {
        if let Some(done) = waiting.pop_front() {
            let _ = done.send(());
        }
        return true;
    }
    let Some(parts) = scan::array_elements(&frame) else {
        return true;
    };
    let text = |i: usize| {
        parts
            .get(i)
            .and_then(|p| scan::string(p))
            .map(Bytes::copy_from_slice)
            .unwrap_or_default()
    };
    let kind = text(0);
    match &kind[..] {
        b"message" | b"pmessage" | b"smessage" => {
            let channel = text(if &kind[..] == b"pmessage" { 2 } else { 1 });
            if notifications_only && !is_notification(&channel) {
                return true;
            }
            let size = frame.len();
            if sink.queued.fetch_add(size, Ordering::Relaxed) + size > sink.limit {
                sink.overflow.cancel();
                return false;
            }
            let name = text(1);
            let _ = sink.events.send(Event::Message {
                kind,
                name,
                raw: frame,
            });
        }
        b"pong" => {
            if let Some(done) = waiting.pop_front() {
                let _ = done.send(());
            }
        }
        b"sunsubscribe" => {
            // Our own SUNSUBSCRIBEs are confirmed too; the session tells the two apart.
            let _ = sink.events.send(Event::ShardDropped {
                conn: id,
                channel: text(1),
            });
        }
        _ => {}
    }
    true
}
