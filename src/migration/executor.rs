//! Moving one slot from a source master to a target master, the way Redis 7.0 wants it.
//!
//! 1. target `SETSLOT s IMPORTING <source>` (always first);
//! 2. source `SETSLOT s MIGRATING <target>`;
//! 3. `GETKEYSINSLOT` + `MIGRATE … KEYS` until the source is empty (`BUSYKEY` and `IOERR` are
//!    re-sent with `REPLACE` at once: while the slot is migrating the source's copy is the
//!    truth, and an `IOERR` may have left a copy on both);
//! 4. the gate `COUNTKEYSINSLOT == 0` on the source;
//! 5. `SETSLOT s NODE <target>` on the target, then the source, then every other master;
//! 6. the proxy's map is patched for the slot.
//!
//! Every step may be repeated: a move interrupted anywhere (crash, error) is finished by
//! running it again, which is what crash recovery does.

use super::throttle::Throttle;
use crate::cluster::Topology;
use crate::config::split_host_port;
use crate::failpoint::freeze_at;
use crate::protocol::scan;
use crate::upstream::control::{error_text, ControlConn};
use crate::upstream::Settings;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A master taking part in a move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Cluster id.
    pub id: String,
    /// `host:port`.
    pub addr: String,
}

/// Why a slot move stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveError {
    /// A node is unreachable, busy, out of memory…: the slot stays open and the move can be
    /// run again later.
    Retry(String),
    /// The move makes no sense (a node answers something no retry changes).
    Fatal(String),
    /// The cluster changed under the move: a failover made the source or the target a
    /// replica, or another node owns the slot now. The job stops and the slot is repaired.
    Changed(String),
    /// A key would block its nodes longer than the bound allows: the job pauses.
    TooBig {
        /// What the operator reads: the key, its size, the estimate and the bound.
        message: String,
        /// Whether the slot is open (MIGRATING/IMPORTING) at that point.
        slot_open: bool,
    },
}

/// What a slot move reports while it runs.
#[derive(Debug, Clone)]
pub enum MoveEvent {
    /// A batch of keys landed on the target: how many, and their `MEMORY USAGE` on the
    /// source.
    Keys {
        /// Keys in the batch.
        keys: u64,
        /// Their measured size.
        bytes: u64,
    },
    /// A big key was moved alone (its measured block time filled in).
    BigKey(super::bigkeys::KeyCost),
}

impl std::fmt::Display for MoveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MoveError::Retry(m) | MoveError::Fatal(m) | MoveError::Changed(m) => f.write_str(m),
            MoveError::TooBig { message, .. } => f.write_str(message),
        }
    }
}

/// Settings and shared pieces every move needs.
#[derive(Debug)]
pub struct MoveContext {
    /// How to reach nodes (AUTH included).
    pub settings: Arc<Settings>,
    /// The proxy's map, patched after each move.
    pub topology: Arc<Topology>,
    /// Keys per `MIGRATE`.
    pub batch_keys: usize,
    /// `MIGRATE`'s own timeout.
    pub migrate_timeout: Duration,
    /// Timeout for the other control calls.
    pub call_timeout: Duration,
    /// Shared keys/s cap.
    pub throttle: Arc<Throttle>,
    /// Where BUSYKEY/IOERR and moved keys are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Keys above this `MEMORY USAGE` are moved alone, after an estimate of their block time.
    pub big_key_bytes: u64,
    /// The longest one key may block its nodes (further capped by `cluster-node-timeout`).
    pub max_key_block: Duration,
    /// Block-time estimates, corrected by measurements.
    pub costs: super::bigkeys::CostModel,
}

/// Control connections of one worker, one per node, reused across slots.
#[derive(Debug)]
pub struct Conns {
    settings: Arc<Settings>,
    by_addr: HashMap<String, ControlConn>,
}

impl Conns {
    /// No connection opened yet.
    pub fn new(settings: Arc<Settings>) -> Conns {
        Conns {
            settings,
            by_addr: HashMap::new(),
        }
    }

    /// The connection to `addr`.
    pub fn get(&mut self, addr: &str) -> &mut ControlConn {
        let settings = self.settings.clone();
        self.by_addr
            .entry(addr.to_string())
            .or_insert_with(|| ControlConn::new(addr, settings))
    }
}

/// Keys of one slot to MIGRATE together.
struct Batch<'a> {
    slot: u16,
    from: &'a str,
    to: &'a str,
    keys: &'a [Bytes],
    replace: bool,
    timeout: Duration,
}

/// What a MIGRATE batch came back with.
enum BatchResult {
    Moved,
    AllExpired,
    Busy,
    IoError(String),
}

impl MoveContext {
    /// A control call whose error replies become `Err(text)`; connection failures are
    /// `MoveError::Retry`.
    pub async fn call(
        &self,
        conns: &mut Conns,
        addr: &str,
        args: &[&[u8]],
        timeout: Duration,
    ) -> Result<Result<Bytes, String>, MoveError> {
        let reply = conns
            .get(addr)
            .call(args, timeout)
            .await
            .map_err(|e| MoveError::Retry(e.to_string()))?;
        Ok(match error_text(&reply) {
            Some(text) => Err(text),
            None => Ok(reply),
        })
    }

    async fn must(
        &self,
        conns: &mut Conns,
        addr: &str,
        args: &[&[u8]],
    ) -> Result<Bytes, MoveError> {
        match self.call(conns, addr, args, self.call_timeout).await? {
            Ok(reply) => Ok(reply),
            Err(text) => Err(classify(&text, addr, args)),
        }
    }

    /// `CLUSTER SETSLOT slot <state> [node]` on `addr` (`state`: IMPORTING, MIGRATING, STABLE).
    pub async fn setslot(
        &self,
        conns: &mut Conns,
        addr: &str,
        slot: u16,
        state: &[u8],
        node: Option<&str>,
    ) -> Result<Result<Bytes, String>, MoveError> {
        let s = slot.to_string();
        let mut args: Vec<&[u8]> = vec![b"CLUSTER", b"SETSLOT", s.as_bytes(), state];
        if let Some(node) = node {
            args.push(node.as_bytes());
        }
        self.call(conns, addr, &args, self.call_timeout).await
    }

    /// Keys of `slot` on `addr`, at most `count`.
    pub async fn keys_in_slot(
        &self,
        conns: &mut Conns,
        addr: &str,
        slot: u16,
        count: usize,
    ) -> Result<Vec<Bytes>, MoveError> {
        let (s, n) = (slot.to_string(), count.to_string());
        let reply = self
            .must(
                conns,
                addr,
                &[b"CLUSTER", b"GETKEYSINSLOT", s.as_bytes(), n.as_bytes()],
            )
            .await?;
        let elements = scan::array_elements(&reply)
            .ok_or_else(|| MoveError::Retry(format!("{addr}: odd GETKEYSINSLOT reply")))?;
        Ok(elements
            .iter()
            .filter_map(|e| scan::string(e).map(Bytes::copy_from_slice))
            .collect())
    }

    /// Number of keys of `slot` on `addr`.
    pub async fn count_in_slot(
        &self,
        conns: &mut Conns,
        addr: &str,
        slot: u16,
    ) -> Result<i64, MoveError> {
        let s = slot.to_string();
        let reply = self
            .must(conns, addr, &[b"CLUSTER", b"COUNTKEYSINSLOT", s.as_bytes()])
            .await?;
        scan::integer(&reply)
            .ok_or_else(|| MoveError::Retry(format!("{addr}: odd COUNTKEYSINSLOT reply")))
    }

    /// The one `MIGRATE` every move and repair sends: `keys` to the node at `to`, logging
    /// in there with the proxy's node credentials (`AUTH`/`AUTH2`) when it has a password.
    pub fn migrate_command(
        &self,
        to: &str,
        keys: &[Bytes],
        replace: bool,
        migrate_timeout: Duration,
    ) -> Result<Vec<Vec<u8>>, MoveError> {
        let (host, port) = split_host_port(to).map_err(MoveError::Fatal)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let mut args: Vec<Vec<u8>> = vec![
            b"MIGRATE".to_vec(),
            host.as_bytes().to_vec(),
            port.to_string().into_bytes(),
            Vec::new(),
            b"0".to_vec(),
            migrate_timeout.as_millis().to_string().into_bytes(),
        ];
        let s = &self.settings;
        if !s.password.is_empty() {
            if s.username.is_empty() {
                args.extend([b"AUTH".to_vec(), s.password.as_bytes().to_vec()]);
            } else {
                args.extend([
                    b"AUTH2".to_vec(),
                    s.username.as_bytes().to_vec(),
                    s.password.as_bytes().to_vec(),
                ]);
            }
        }
        if replace {
            args.push(b"REPLACE".to_vec());
        }
        args.push(b"KEYS".to_vec());
        args.extend(keys.iter().map(|k| k.to_vec()));
        Ok(args)
    }

    /// Sends `keys` from `from` to `to` with `MIGRATE … KEYS`.
    async fn migrate(
        &self,
        conns: &mut Conns,
        from: &str,
        to: &str,
        keys: &[Bytes],
        replace: bool,
        migrate_timeout: Duration,
    ) -> Result<BatchResult, MoveError> {
        let command = self.migrate_command(to, keys, replace, migrate_timeout)?;
        let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
        self.throttle.take(keys.len()).await;
        let reply = self
            .call(conns, from, &args, migrate_timeout + self.call_timeout)
            .await?;
        match reply {
            Ok(raw) if scan::string(&raw) == Some(b"NOKEY") => Ok(BatchResult::AllExpired),
            Ok(_) => Ok(BatchResult::Moved),
            Err(text) if text.contains("BUSYKEY") => Ok(BatchResult::Busy),
            Err(text) if text.starts_with("IOERR") || text.contains("IOERR") => {
                Ok(BatchResult::IoError(text))
            }
            Err(text) => Err(classify(&text, from, &[b"MIGRATE"])),
        }
    }

    /// Moves every key of `slot` from `from` to `to` (the slot must already be open), and
    /// returns how many keys went. Each batch is sized first: big keys go alone, with a
    /// timeout fitted to them. `on_event` hears about each batch and big key as it lands.
    pub async fn drain_slot(
        &self,
        conns: &mut Conns,
        slot: u16,
        (from, to): (&str, &str),
        replace_always: bool,
        on_event: &mut (dyn FnMut(MoveEvent) + Send),
    ) -> Result<u64, MoveError> {
        let mut moved = 0u64;
        let mut io_errors = 0u32;
        loop {
            let keys = self
                .keys_in_slot(conns, from, slot, self.batch_keys)
                .await?;
            if keys.is_empty() {
                // The gate: giving the slot away while the source has keys deletes them.
                if self.count_in_slot(conns, from, slot).await? == 0 {
                    return Ok(moved);
                }
                continue;
            }
            let sizes = self.sizes(conns, from, &keys).await?;
            let big = self
                .big_keys(conns, from, slot, &keys, &sizes, true)
                .await?;
            let (mut small, mut small_bytes) = (Vec::with_capacity(keys.len()), 0u64);
            for (i, key) in keys.iter().enumerate() {
                if !big.iter().any(|(b, _)| *b == i) {
                    small.push(key.clone());
                    small_bytes += sizes[i];
                }
            }
            if !small.is_empty() {
                let batch = Batch {
                    slot,
                    from,
                    to,
                    keys: &small,
                    replace: replace_always,
                    timeout: self.migrate_timeout,
                };
                self.send_batch(conns, batch, &mut io_errors).await?;
                moved += small.len() as u64;
                self.metrics.migration_keys.inc_by(small.len() as u64);
                self.metrics.migration_bytes.inc_by(small_bytes);
                on_event(MoveEvent::Keys {
                    keys: small.len() as u64,
                    bytes: small_bytes,
                });
            }
            for (i, mut cost) in big {
                let estimate = Duration::from_millis(cost.estimated_ms);
                tracing::info!(slot, key = %cost.key, kind = %cost.kind, bytes = cost.bytes, elements = cost.elements, estimated_ms = cost.estimated_ms, "moving a big key alone");
                let batch = Batch {
                    slot,
                    from,
                    to,
                    keys: &keys[i..=i],
                    replace: replace_always,
                    timeout: self.migrate_timeout.max(estimate * 4),
                };
                let started = std::time::Instant::now();
                self.send_batch(conns, batch, &mut io_errors).await?;
                let took = started.elapsed();
                self.costs.learn(estimate, took);
                self.metrics
                    .migration_big_key_block
                    .observe(took.as_secs_f64());
                cost.block_ms = Some(took.as_millis() as u64);
                tracing::info!(slot, key = %cost.key, block_ms = took.as_millis() as u64, "big key moved");
                moved += 1;
                self.metrics.migration_keys.inc();
                self.metrics.migration_bytes.inc_by(cost.bytes);
                on_event(MoveEvent::Keys {
                    keys: 1,
                    bytes: cost.bytes,
                });
                on_event(MoveEvent::BigKey(cost));
            }
            freeze_at("migration::mid_migrate").await;
        }
    }

    /// MIGRATEs one batch until every key in it has landed: `BUSYKEY` is re-sent with
    /// `REPLACE`, `IOERR` one key at a time with `REPLACE` and four times the timeout.
    async fn send_batch(
        &self,
        conns: &mut Conns,
        batch: Batch<'_>,
        io_errors: &mut u32,
    ) -> Result<(), MoveError> {
        let Batch {
            slot,
            from,
            to,
            keys,
            mut replace,
            timeout: base,
        } = batch;
        let mut timeout = base;
        let mut part: &[Bytes] = keys;
        let mut done = 0;
        while done < keys.len() {
            match self
                .migrate(conns, from, to, part, replace, timeout)
                .await?
            {
                BatchResult::Moved | BatchResult::AllExpired => {
                    done += part.len();
                    part = &keys[done..(done + part.len()).min(keys.len())];
                }
                BatchResult::Busy => {
                    self.metrics
                        .migration_errors
                        .with_label_values(&["busykey"])
                        .inc();
                    tracing::info!(slot, from, to, "BUSYKEY: re-sending the batch with REPLACE");
                    replace = true;
                }
                BatchResult::IoError(text) => {
                    self.metrics
                        .migration_errors
                        .with_label_values(&["ioerr"])
                        .inc();
                    *io_errors += 1;
                    tracing::warn!(slot, from, to, error = %text, "MIGRATE IOERR: re-sending with REPLACE, one key at a time");
                    if *io_errors > 5 {
                        return Err(MoveError::Retry(format!("MIGRATE {from} → {to}: {text}")));
                    }
                    // The copy on the target may be partial or stale: REPLACE it at once.
                    // A big key may need longer than the timeout: move keys singly, with
                    // more patience, for the rest of this batch.
                    timeout = base * 4;
                    replace = true;
                    part = &keys[done..done + 1];
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(*io_errors))).await;
                }
            }
        }
        Ok(())
    }

    /// Runs the whole protocol for one slot; returns the keys moved. An error is
    /// [`MoveError::Changed`] when either end is no longer the master it was.
    pub async fn move_slot(
        &self,
        conns: &mut Conns,
        slot: u16,
        from: &Endpoint,
        to: &Endpoint,
        others: &[Endpoint],
        on_event: &mut (dyn FnMut(MoveEvent) + Send),
    ) -> Result<u64, MoveError> {
        match self
            .move_slot_steps(conns, slot, from, to, others, on_event)
            .await
        {
            Ok(keys) => Ok(keys),
            Err(e @ MoveError::TooBig { .. }) => Err(e),
            Err(e) => Err(self.explain(conns, e, from, to).await),
        }
    }

    async fn move_slot_steps(
        &self,
        conns: &mut Conns,
        slot: u16,
        from: &Endpoint,
        to: &Endpoint,
        others: &[Endpoint],
        on_event: &mut (dyn FnMut(MoveEvent) + Send),
    ) -> Result<u64, MoveError> {
        // A failover between two slots must not go unnoticed: both ends still masters?
        self.ensure_master(conns, from).await?;
        self.ensure_master(conns, to).await?;
        self.preflight_big_keys(conns, &from.addr, slot).await?;
        tracing::debug!(target_node = %to.addr, "step 1: SETSLOT IMPORTING on the target");
        match self
            .setslot(conns, &to.addr, slot, b"IMPORTING", Some(&from.id))
            .await?
        {
            Ok(_) => {}
            Err(text) if text.contains("already the owner") => {
                // An earlier run got as far as step 5 on the target: finish the hand-over.
                self.hand_over(conns, slot, from, to, others).await?;
                return Ok(0);
            }
            Err(text) => return Err(classify(&text, &to.addr, &[b"SETSLOT IMPORTING"])),
        }
        freeze_at("migration::after_importing").await;
        tracing::debug!(source_node = %from.addr, "step 2: SETSLOT MIGRATING on the source");
        match self
            .setslot(conns, &from.addr, slot, b"MIGRATING", Some(&to.id))
            .await?
        {
            Ok(_) => {}
            // "I'm not the owner" is a change (see classify): the repair closes the target.
            Err(text) => return Err(classify(&text, &from.addr, &[b"SETSLOT MIGRATING"])),
        }
        freeze_at("migration::after_migrating").await;
        tracing::debug!("step 3: MIGRATE the keys");
        let moved = self
            .drain_slot(conns, slot, (&from.addr, &to.addr), false, on_event)
            .await?;
        tracing::debug!(keys = moved, "step 4: the source is empty");
        self.hand_over(conns, slot, from, to, others).await?;
        Ok(moved)
    }

    /// Step 5 and 6: `SETSLOT NODE` on the target, the source, then everyone else; then the
    /// proxy's own map.
    pub async fn hand_over(
        &self,
        conns: &mut Conns,
        slot: u16,
        from: &Endpoint,
        to: &Endpoint,
        others: &[Endpoint],
    ) -> Result<(), MoveError> {
        let s = slot.to_string();
        tracing::debug!("step 5: SETSLOT NODE on the target, the source, every other master");
        let args: [&[u8]; 5] = [
            b"CLUSTER",
            b"SETSLOT",
            s.as_bytes(),
            b"NODE",
            to.id.as_bytes(),
        ];
        freeze_at("migration::before_target_node").await;
        self.must(conns, &to.addr, &args).await?;
        freeze_at("migration::after_target_node").await;
        match self
            .call(conns, &from.addr, &args, self.call_timeout)
            .await?
        {
            Ok(_) => {}
            // The source lost its last slot and turned into a replica of the target; a
            // replica of anyone else means a failover happened.
            Err(text) if text.contains("only with masters") => {
                let (me, _) = self.node_view(conns, &from.addr).await?;
                if me.master_id.as_deref() != Some(to.id.as_str()) {
                    return Err(MoveError::Changed(format!(
                        "{}: SETSLOT NODE: {text} (a failover: it is a replica, not of the target)",
                        from.addr
                    )));
                }
            }
            Err(text) => return Err(classify(&text, &from.addr, &[b"SETSLOT NODE"])),
        }
        freeze_at("migration::after_source_node").await;
        for other in others.iter().filter(|o| o.id != from.id && o.id != to.id) {
            // Others also learn it through gossip; a failure here is not worth stopping for.
            match self
                .call(conns, &other.addr, &args, self.call_timeout)
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(text)) => {
                    tracing::debug!(slot, node = %other.addr, error = %text, "SETSLOT NODE on a bystander")
                }
                Err(e) => {
                    tracing::debug!(slot, node = %other.addr, error = %e, "SETSLOT NODE on a bystander")
                }
            }
        }
        self.topology.set_owner(slot, &to.addr);
        tracing::debug!(owner = %to.addr, "step 6: the proxy's map points at the new owner");
        Ok(())
    }
}

/// Error replies that go away by themselves are retried later; the rest are fatal.
fn classify(text: &str, addr: &str, args: &[&[u8]]) -> MoveError {
    let what = args
        .iter()
        .take(3)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let message = format!("{addr}: {what}: {text}");
    if super::roles::means_changed(text) {
        return MoveError::Changed(message);
    }
    let transient = [
        "OOM",
        "READONLY",
        "LOADING",
        "CLUSTERDOWN",
        "TRYAGAIN",
        "MASTERDOWN",
        "BUSY",
        "MISCONF",
        "IOERR",
        // A node whose gossip has not caught up with a failover yet.
        "Target node is not a master",
    ];
    if transient
        .iter()
        .any(|t| text.starts_with(t) || text.contains(&format!(" {t}")))
    {
        MoveError::Retry(message)
    } else {
        MoveError::Fatal(message)
    }
}
