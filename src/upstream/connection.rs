//! One multiplexed, pipelined connection to a node, and the task that keeps it alive.
//!
//! Many clients' requests share the connection. The writer takes everything queued, writes it
//! in one go, and records a [`Pending`] per expected reply; the reader frames replies and
//! completes the pendings in FIFO order (Redis answers in request order). When the connection
//! breaks, every pending fails with `maybe_executed`, and the supervisor reconnects with
//! jittered exponential backoff, failing new requests fast while the node is unreachable.

use super::budget::ReplyBudgets;
use super::stream::{self, NodeStream};
use super::Settings;
use crate::error::{Cause, UpstreamError};
use crate::metrics::Metrics;
use crate::protocol::scan::ReplyScanner;
use bytes::{Bytes, BytesMut};
use rand::Rng;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// What a caller receives for one request.
pub type ReplyResult = Result<Bytes, UpstreamError>;

/// One request for a node.
#[derive(Debug)]
pub struct Job {
    /// The encoded command.
    pub payload: Bytes,
    /// Send `ASKING` right before it (after an `ASK` redirect).
    pub asking: bool,
    /// How many reply frames the payload produces (1 for one command; a whole
    /// `MULTI … EXEC` block sent as one job produces one per command). They are handed back
    /// together, concatenated, so no other request's reply can land between them.
    pub frames: usize,
    /// Where the reply goes.
    pub reply: oneshot::Sender<ReplyResult>,
    /// The client's account in [`super::budget::ReplyBudgets`], charged with the reply.
    pub client: u32,
}

/// A caller waiting for a reply, and the client its bytes are charged to.
#[derive(Debug)]
struct Waiter {
    tx: oneshot::Sender<ReplyResult>,
    client: u32,
}

impl Waiter {
    /// Hands the reply over and charges it to the client (unless the caller is gone).
    fn deliver(self, reply: Bytes, budgets: &ReplyBudgets) {
        let len = reply.len();
        if self.tx.send(Ok(reply)).is_ok() {
            budgets.charge(self.client, len);
        }
    }

    fn fail(self, error: UpstreamError) {
        let _ = self.tx.send(Err(error));
    }
}

/// A reply the reader still expects, in the order the requests were written.
#[derive(Debug)]
enum Pending {
    /// Frames nobody waits for: the `+OK` of an `ASKING` we sent on our own, or the reply of
    /// a request that timed out (it keeps its place, so later replies stay matched).
    Discard(usize),
    /// A caller waiting for this many reply frames, until the deadline.
    Reply(Waiter, usize, Instant),
}

const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
/// Stop coalescing queued requests into one write beyond this many bytes.
const MAX_WRITE_BATCH: usize = 256 * 1024;
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Opens a connection to `addr` (TLS when `cluster.tls`), with `TCP_NODELAY` and AUTH if
/// configured.
pub async fn connect(addr: &Arc<str>, settings: &Settings) -> Result<NodeStream, UpstreamError> {
    connect_with(addr, settings, false).await
}

/// Like [`connect`]; with `resp3` the connection is switched to RESP3 (`HELLO 3`).
pub async fn connect_with(
    addr: &Arc<str>,
    settings: &Settings,
    resp3: bool,
) -> Result<NodeStream, UpstreamError> {
    let fail = |cause: Cause| UpstreamError::Connect {
        addr: addr.clone(),
        cause,
    };
    let target = match crate::config::split_host_port(addr) {
        Ok((host, port)) => (host.to_string(), port),
        Err(e) => return Err(fail(Cause::Config(e.to_string()))),
    };
    let host = target.0.clone();
    let tcp = tokio::time::timeout(settings.connect_timeout, TcpStream::connect(target))
        .await
        .map_err(|_| fail(Cause::TimedOut("connect")))?
        .map_err(|e| fail(Cause::bare_io(e)))?;
    tcp.set_nodelay(true)
        .map_err(|e| fail(Cause::io("TCP_NODELAY", e)))?;
    let mut stream = match &settings.tls {
        None => NodeStream::Plain(tcp),
        Some(Err(error)) => {
            return Err(fail(Cause::Config(format!(
                "TLS is misconfigured: {error}"
            ))))
        }
        Some(Ok(tls)) => {
            let name = stream::server_name(&host).map_err(|e| {
                fail(Cause::Config(format!(
                    "`{host}` cannot be checked against a certificate: {e}"
                )))
            })?;
            let tls = tokio::time::timeout(settings.connect_timeout, tls.connect(name, tcp))
                .await
                .map_err(|_| fail(Cause::TimedOut("TLS handshake")))?
                .map_err(|e| fail(Cause::io("TLS handshake failed", e)))?;
            NodeStream::Tls(Box::new(tls))
        }
    };
    if let Some(auth) = settings.auth_command() {
        let check = async {
            stream.write_all(&auth).await?;
            stream.flush().await?;
            let mut buf = [0u8; 512];
            let n = stream.read(&mut buf).await?;
            Ok::<_, std::io::Error>(buf[..n].to_vec())
        };
        let reply = tokio::time::timeout(settings.connect_timeout, check)
            .await
            .map_err(|_| fail(Cause::TimedOut("AUTH")))?
            .map_err(|e| fail(Cause::io("AUTH", e)))?;
        if !reply.starts_with(b"+OK") {
            return Err(fail(Cause::Refused(format!(
                "AUTH failed: {}",
                String::from_utf8_lossy(&reply).trim()
            ))));
        }
    }
    if let Some(user) = &settings.switch_to {
        switch_user(&mut stream, settings, user)
            .await
            .map_err(fail)?;
    }
    if resp3 {
        let hello = async {
            stream
                .write_all(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n")
                .await?;
            stream.flush().await?;
            let mut buf = BytesMut::with_capacity(1024);
            let mut scanner = ReplyScanner::default();
            loop {
                if let Ok(Some(_)) = scanner.scan(&buf) {
                    return Ok::<_, std::io::Error>(buf);
                }
                if stream.read_buf(&mut buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
        };
        let reply = tokio::time::timeout(settings.connect_timeout, hello)
            .await
            .map_err(|_| fail(Cause::TimedOut("HELLO 3")))?
            .map_err(|e| fail(Cause::io("HELLO 3", e)))?;
        if reply.starts_with(b"-") {
            return Err(fail(Cause::Refused(format!(
                "HELLO 3 failed: {}",
                String::from_utf8_lossy(&reply).trim()
            ))));
        }
    }
    Ok(stream)
}

/// Sets up `user` with the proxy's rights, then logs in as it (see [`super::identity`]).
async fn switch_user(
    stream: &mut NodeStream,
    settings: &Settings,
    user: &super::identity::NodeUser,
) -> Result<(), Cause> {
    let auth = crate::protocol::request::encode_command(&[
        "AUTH",
        user.username.as_str(),
        user.password.as_str(),
    ]);
    for (payload, step) in [(&user.setup, "setting up the node user"), (&auth, "AUTH")] {
        let reply = tokio::time::timeout(settings.connect_timeout, round_trip(stream, payload))
            .await
            .map_err(|_| Cause::TimedOut("switching node user"))?
            .map_err(|e| Cause::io("switching node user", e))?;
        if !reply.starts_with(b"+OK") {
            return Err(Cause::Refused(format!(
                "{step} for `{}` failed: {}",
                user.username,
                String::from_utf8_lossy(&reply).trim()
            )));
        }
    }
    Ok(())
}

/// Writes one request and reads its whole reply.
async fn round_trip(stream: &mut NodeStream, payload: &[u8]) -> std::io::Result<BytesMut> {
    stream.write_all(payload).await?;
    stream.flush().await?;
    let mut buf = BytesMut::with_capacity(256);
    let mut scanner = ReplyScanner::default();
    loop {
        if let Ok(Some(_)) = scanner.scan(&buf) {
            return Ok(buf);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Keeps one connection to `addr` alive until every sender of `jobs` is gone.
pub async fn supervise(
    addr: Arc<str>,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    resp3: bool,
) {
    let mut backoff = MIN_BACKOFF;
    let mut first = true;
    loop {
        // An identity's connection ends with the identity (see [`super::identity`]).
        if settings
            .switch_to
            .as_ref()
            .is_some_and(|u| u.is_forgotten())
        {
            return;
        }
        match connect_with(&addr, &settings, resp3).await {
            Ok(stream) => {
                if !first {
                    metrics
                        .upstream_reconnects
                        .with_label_values(&[&addr])
                        .inc();
                }
                first = false;
                backoff = MIN_BACKOFF;
                tracing::debug!(node = %addr, "connected");
                let open = metrics.upstream_connections.with_label_values(&[&addr]);
                open.inc();
                let ended = serve(
                    &addr,
                    stream,
                    &mut jobs,
                    settings.request_timeout,
                    &settings.budgets,
                )
                .await;
                open.dec();
                match ended {
                    Ended::JobsClosed => return,
                    Ended::Broken(reason) => {
                        tracing::warn!(node = %addr, %reason, "node connection lost; reconnecting");
                        metrics
                            .upstream_errors
                            .with_label_values(&[&addr, "connection_lost"])
                            .inc();
                    }
                }
            }
            Err(error) => {
                tracing::warn!(node = %addr, %error, retry_in = ?backoff, "cannot connect to node");
                metrics
                    .upstream_errors
                    .with_label_values(&[&addr, "connect"])
                    .inc();
                let jitter = rand::thread_rng().gen_range(0.5..1.5);
                let sleep = tokio::time::sleep(backoff.mul_f64(jitter));
                tokio::pin!(sleep);
                // While the node is unreachable, fail requests at once instead of queueing them.
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        job = jobs.recv() => match job {
                            Some(job) => { let _ = job.reply.send(Err(error.clone())); }
                            None => return,
                        },
                    }
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

enum Ended {
    JobsClosed,
    Broken(Cause),
}

/// Runs one connection until it breaks or the pool is dropped.
///
/// The writer stamps each request with its deadline, once per write. The reader keeps one
/// timer for the whole connection, set to the oldest waiting request's deadline; when it
/// fires, overdue callers get [`UpstreamError::Timeout`] and their replies are discarded when
/// they come. (A timer per request cost a timer-wheel insert and remove on every command.)
async fn serve(
    addr: &Arc<str>,
    stream: NodeStream,
    jobs: &mut mpsc::UnboundedReceiver<Job>,
    timeout: Duration,
    budgets: &ReplyBudgets,
) -> Ended {
    let (mut reader, mut writer) = stream.into_split();
    let (pending_tx, mut pending_rx) = mpsc::unbounded_channel::<Pending>();
    let write_loop = async {
        let mut out = BytesMut::with_capacity(16 * 1024);
        loop {
            let Some(job) = jobs.recv().await else {
                return Ended::JobsClosed;
            };
            // Let the other ready sessions queue their requests first, so that one write
            // carries many clients' commands (costs a task poll, saves write syscalls).
            tokio::task::yield_now().await;
            let deadline = Instant::now() + timeout;
            out.clear();
            queue(&mut out, job, deadline, &pending_tx);
            while out.len() < MAX_WRITE_BATCH {
                match jobs.try_recv() {
                    Ok(job) => queue(&mut out, job, deadline, &pending_tx),
                    Err(_) => break,
                }
            }
            // The flush matters for TLS (rustls buffers records); for TCP it does nothing.
            if let Err(e) = crate::io::write_out(&mut writer, &out).await {
                return Ended::Broken(Cause::io("write failed", e));
            }
        }
    };
    let mut waiting: VecDeque<Pending> = VecDeque::new();
    let read_loop = async {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut scanner = ReplyScanner::default();
        // A multi-frame reply being gathered: its caller, frames still due, frames so far.
        let mut gathering: Option<(Waiter, usize, BytesMut)> = None;
        let timer = tokio::time::sleep(timeout);
        tokio::pin!(timer);
        loop {
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(16 * 1024);
            }
            tokio::select! {
                biased;
                read = reader.read_buf(&mut buf) => match read {
                    Ok(0) => return Ended::Broken(Cause::Closed("closed by node")),
                    Ok(_) => {}
                    Err(e) => return Ended::Broken(Cause::io("read failed", e)),
                },
                _ = &mut timer => {
                    take_new(&mut pending_rx, &mut waiting);
                    let next = expire(addr, &mut waiting, timeout, Instant::now());
                    timer.as_mut().reset(next.into());
                    continue;
                }
            }
            loop {
                let len = match scanner.scan(&buf) {
                    Ok(Some(len)) => len,
                    Ok(None) => break,
                    Err(e) => return Ended::Broken(Cause::Refused(format!("bad reply: {e}"))),
                };
                let frame = buf.split_to(len);
                if let Some((_, due, so_far)) = gathering.as_mut() {
                    so_far.unsplit(frame);
                    *due -= 1;
                    if *due == 0 {
                        if let Some((waiter, _, all)) = gathering.take() {
                            waiter.deliver(all.freeze(), budgets);
                        }
                    }
                    continue;
                }
                if waiting.is_empty() {
                    take_new(&mut pending_rx, &mut waiting);
                }
                match waiting.front_mut() {
                    Some(Pending::Discard(due)) if *due > 1 => *due -= 1,
                    Some(Pending::Discard(_)) => {
                        waiting.pop_front();
                    }
                    Some(Pending::Reply(..)) => {
                        if let Some(Pending::Reply(waiter, frames, _)) = waiting.pop_front() {
                            match frames {
                                1 => waiter.deliver(frame.freeze(), budgets),
                                _ => gathering = Some((waiter, frames - 1, frame)),
                            }
                        }
                    }
                    None => return Ended::Broken(Cause::Refused("reply without a request".into())),
                }
            }
        }
    };
    let ended = tokio::select! {
        ended = write_loop => ended,
        ended = read_loop => ended,
    };
    let cause = match &ended {
        Ended::JobsClosed => Cause::Closed("proxy closed the connection"),
        Ended::Broken(cause) => cause.clone(),
    };
    pending_rx.close();
    take_new(&mut pending_rx, &mut waiting);
    for pending in waiting {
        if let Pending::Reply(waiter, _, _) = pending {
            waiter.fail(UpstreamError::Lost {
                addr: addr.clone(),
                cause: cause.clone(),
                maybe_executed: true,
            });
        }
    }
    ended
}

/// Moves the pendings the writer recorded since the last look into `waiting`.
fn take_new(pending_rx: &mut mpsc::UnboundedReceiver<Pending>, waiting: &mut VecDeque<Pending>) {
    while let Ok(pending) = pending_rx.try_recv() {
        waiting.push_back(pending);
    }
}

/// Answers every request past its deadline with a timeout (its reply will be discarded) and
/// returns when to look again: the oldest remaining deadline, or one timeout from `now`
/// when nothing waits (new requests may arrive meanwhile; their deadlines are later).
fn expire(
    addr: &Arc<str>,
    waiting: &mut VecDeque<Pending>,
    timeout: Duration,
    now: Instant,
) -> Instant {
    for pending in waiting.iter_mut() {
        let Pending::Reply(_, frames, deadline) = pending else {
            continue;
        };
        // Deadlines grow along the queue: the first one not yet due ends the pass.
        if *deadline > now {
            return *deadline;
        }
        let frames = *frames;
        if let Pending::Reply(waiter, ..) = std::mem::replace(pending, Pending::Discard(frames)) {
            waiter.fail(UpstreamError::Timeout {
                addr: addr.clone(),
                ms: timeout.as_millis() as u64,
            });
        }
    }
    now + timeout
}

fn queue(
    out: &mut BytesMut,
    job: Job,
    deadline: Instant,
    pending: &mpsc::UnboundedSender<Pending>,
) {
    if job.asking {
        out.extend_from_slice(ASKING);
        let _ = pending.send(Pending::Discard(1));
    }
    out.extend_from_slice(&job.payload);
    let waiter = Waiter {
        tx: job.reply,
        client: job.client,
    };
    let _ = pending.send(Pending::Reply(waiter, job.frames.max(1), deadline));
}
