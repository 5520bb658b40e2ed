//! The current slot map, swapped atomically, and the single task that refreshes it.
//!
//! Sessions call [`Topology::snapshot`] once per command and route with what they get: one
//! immutable [`Snapshot`] holding the slot map, a connection pool per master and the command
//! table. Only the refresher (and the redirect path, through [`Topology::request_refresh`])
//! ever builds a new snapshot, so readers never take a lock.

use super::slot_map::{join_addr, SlotMap};
use crate::config::split_host_port;
use crate::metrics::Metrics;
use crate::protocol::command::CommandTable;
use crate::upstream::Lane;
use crate::upstream::{oneshot, pool::NodePool, Settings};
use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One consistent view of the cluster.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases every time the slot map changes.
    pub epoch: u64,
    /// Owner of every slot.
    pub map: SlotMap,
    /// A pool per entry of `map.nodes`, same index.
    pub pools: Vec<Arc<NodePool>>,
    /// Indices of masters that own at least one slot.
    pub serving: Vec<usize>,
    /// The cluster's commands.
    pub commands: Arc<CommandTable>,
    /// `redis_version` of the nodes, reported by HELLO and INFO.
    pub server_version: Arc<str>,
}

impl Snapshot {
    /// The pool of the master owning `slot`.
    #[inline]
    pub fn owner(&self, slot: u16) -> Option<&Arc<NodePool>> {
        self.map.owner(slot).and_then(|i| self.pools.get(i))
    }

    /// Pools of all masters.
    pub fn masters(&self) -> &[Arc<NodePool>] {
        &self.pools
    }

    /// A master for keyless commands, spread by `lane`.
    pub fn any_master(&self, lane: Lane) -> Option<&Arc<NodePool>> {
        if self.pools.is_empty() {
            return None;
        }
        // Prefer masters that own slots: an empty spare may be about to be removed.
        match self.serving.len() {
            0 => self.pools.get(lane.index % self.pools.len()),
            n => self.pools.get(self.serving[lane.index % n]),
        }
    }
}

/// Why a refresh ran (a metric label).
#[derive(Debug, Clone, Copy)]
pub enum RefreshCause {
    /// First load.
    Startup,
    /// The periodic timer.
    Periodic,
    /// A MOVED or CLUSTERDOWN reply, or a lost connection.
    Redirect,
    /// The admin API or the migration engine needs a fresh view.
    Admin,
}

impl RefreshCause {
    fn label(self) -> &'static str {
        match self {
            RefreshCause::Startup => "startup",
            RefreshCause::Periodic => "periodic",
            RefreshCause::Redirect => "redirect",
            RefreshCause::Admin => "admin",
        }
    }
}

/// Shared handle to the cluster view.
#[derive(Debug)]
pub struct Topology {
    current: ArcSwapOption<Snapshot>,
    pools: Mutex<HashMap<String, Arc<NodePool>>>,
    /// Serializes installs, so a MOVED patch never overwrites a newer reload.
    install_lock: Mutex<()>,
    /// Counts slot patches (MOVED, migrations), so a reload that raced one is not installed.
    patches: AtomicU64,
    refresh_wanted: Notify,
    next_epoch: AtomicU64,
    seeds: Vec<String>,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    refresh_interval: Duration,
    query_timeout: Duration,
    /// Masters seen replaced by another one taking all their slots (failovers).
    successions: Mutex<super::succession::Successions>,
}

impl Topology {
    /// A topology with no map yet; [`Topology::run_refresher`] loads it.
    pub fn new(
        config: &crate::config::ClusterSection,
        settings: Arc<Settings>,
        metrics: Arc<Metrics>,
    ) -> Arc<Topology> {
        Arc::new(Topology {
            current: ArcSwapOption::empty(),
            pools: Mutex::new(HashMap::new()),
            install_lock: Mutex::new(()),
            patches: AtomicU64::new(0),
            refresh_wanted: Notify::new(),
            next_epoch: AtomicU64::new(1),
            seeds: config.seeds.clone(),
            settings,
            metrics,
            refresh_interval: Duration::from_millis(config.refresh_interval_ms),
            query_timeout: config.request_timeout().max(Duration::from_secs(1)),
            successions: Mutex::new(Default::default()),
        })
    }

    /// The master that took over all slots of master `id` after it left the map (a
    /// failover this proxy saw), following chains of failovers.
    pub fn successor_of(&self, id: &str) -> Option<String> {
        self.successions.lock().successor_of(id)
    }

    /// The current snapshot, or `None` before the first successful load.
    #[inline]
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }

    /// The current snapshot for a short, synchronous look (the per-command hot path): unlike
    /// [`Topology::snapshot`] it takes no reference count (arc-swap's thread-local debts), so
    /// cores routing commands at once never contend on the snapshot's counter.
    #[inline]
    pub fn current(&self) -> arc_swap::Guard<Option<Arc<Snapshot>>> {
        self.current.load()
    }

    /// How to connect to nodes (for connections outside the pools).
    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    /// The pool for a node named in a redirect, created on first use.
    pub fn pool_for(&self, addr: &str) -> Arc<NodePool> {
        let addr = normalize_addr(addr);
        let mut pools = self.pools.lock();
        pools
            .entry(addr.clone())
            .or_insert_with(|| NodePool::spawn(&addr, self.settings.clone(), self.metrics.clone()))
            .clone()
    }

    /// Asks the refresher to reload the map soon; many requests coalesce into one reload.
    pub fn request_refresh(&self) {
        self.refresh_wanted.notify_one();
    }

    /// Loads the slot map (and, the first time, the command table) from any reachable node.
    pub async fn refresh(&self, cause: RefreshCause) -> Result<(), TopologyError> {
        self.metrics
            .slot_map_refreshes
            .with_label_values(&[cause.label()])
            .inc();
        let previous = self.snapshot();
        let candidates = self.candidates();
        let mut errors = Vec::new();
        // First pass: only a view that covers every slot (a node that joined moments ago may
        // not know every owner yet). Second pass: the best any node has.
        for require_full in [true, false] {
            for addr in &candidates {
                match self
                    .load_from(addr, previous.as_deref(), require_full)
                    .await
                {
                    Ok(()) => return Ok(()),
                    Err(e) => errors.push(e),
                }
            }
        }
        self.metrics.slot_map_refresh_errors.inc();
        Err(TopologyError::NoNode(errors))
    }

    /// Reads the cluster's slot map afresh from the first node that answers, without
    /// installing it: decisions such as rebalance plans are made on what the cluster says
    /// right now, not on the proxy's (possibly patched) snapshot.
    pub async fn read_map(&self) -> Result<SlotMap, TopologyError> {
        let mut errors = Vec::new();
        let mut best: Option<SlotMap> = None;
        for addr in self.candidates() {
            match self.fetch_map(&addr).await {
                // A node that joined moments ago may not know every owner yet: prefer a
                // node whose view covers every slot.
                Ok(map) if map.covered() == crate::cluster::SLOT_COUNT => return Ok(map),
                Ok(map) => {
                    if !best.as_ref().is_some_and(|b| b.covered() >= map.covered()) {
                        best = Some(map);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        best.ok_or(TopologyError::NoNode(errors))
    }

    /// Every master's own view of the slot map, which must all agree: the pre-flight check
    /// before a migration is planned.
    pub async fn read_agreed_map(&self) -> Result<SlotMap, TopologyError> {
        let first = self.read_map().await?;
        for node in &first.nodes {
            let theirs = self.fetch_map(&node.addr).await?;
            if !same_owners(&theirs, &first) {
                return Err(TopologyError::Disagrees {
                    addr: node.addr.clone(),
                });
            }
        }
        Ok(first)
    }

    /// Nodes to ask for the map: the current masters, then the seeds.
    fn candidates(&self) -> Vec<String> {
        let mut candidates: Vec<String> = self
            .snapshot()
            .map(|s| s.map.nodes.iter().map(|n| n.addr.clone()).collect())
            .unwrap_or_default();
        for seed in &self.seeds {
            let seed = normalize_addr(seed);
            if !candidates.contains(&seed) {
                candidates.push(seed);
            }
        }
        candidates
    }

    async fn fetch_map(&self, addr: &str) -> Result<SlotMap, TopologyError> {
        let query = |args: &'static [&'static str]| {
            oneshot::query(addr, args, &self.settings, self.query_timeout)
        };
        let node = |source| TopologyError::Node {
            addr: addr.into(),
            source,
        };
        let shards = query(&["CLUSTER", "SHARDS"]).await.map_err(node)?;
        let map = match SlotMap::from_shards(&shards, self.settings.tls.is_some()) {
            Ok(map) => map,
            Err(_) => {
                let slots = query(&["CLUSTER", "SLOTS"]).await.map_err(node)?;
                SlotMap::from_slots(&slots).map_err(|source| TopologyError::Map {
                    addr: addr.into(),
                    source,
                })?
            }
        };
        if map.covered() == 0 {
            return Err(TopologyError::NoSlots { addr: addr.into() });
        }
        Ok(map)
    }

    async fn load_from(
        &self,
        addr: &str,
        previous: Option<&Snapshot>,
        require_full: bool,
    ) -> Result<(), TopologyError> {
        let patches_before = self.patches.load(Ordering::Relaxed);
        let query = |args: &'static [&'static str]| {
            oneshot::query(addr, args, &self.settings, self.query_timeout)
        };
        let map = self.fetch_map(addr).await?;
        if require_full && map.covered() < crate::cluster::SLOT_COUNT {
            return Err(TopologyError::Partial {
                addr: addr.into(),
                covered: map.covered(),
            });
        }
        let node = |source| TopologyError::Node {
            addr: addr.into(),
            source,
        };
        let (commands, version) = match previous {
            Some(p) => (p.commands.clone(), p.server_version.clone()),
            None => {
                let raw = query(&["COMMAND"]).await.map_err(node)?;
                let commands = CommandTable::from_command_reply(&raw).map_err(|source| {
                    TopologyError::Commands {
                        addr: addr.into(),
                        source,
                    }
                })?;
                let commands = Arc::new(commands);
                let info = query(&["INFO", "server"]).await.map_err(node)?;
                (commands, redis_version(&info).into())
            }
        };
        if previous.is_some_and(|p| p.map == map) {
            self.metrics.mark_refreshed(now_secs());
            return Ok(());
        }
        let _guard = self.install_lock.lock();
        if self.patches.load(Ordering::Relaxed) != patches_before {
            // A slot moved while this map was being read: it may predate the move and would
            // undo the patch. Read again instead.
            drop(_guard);
            self.request_refresh();
            return Ok(());
        }
        self.install_locked(map, commands, version);
        Ok(())
    }

    /// Records what a `MOVED` said: `slot` now belongs to `addr`. The map is patched at once,
    /// so the commands that follow go straight to the new owner instead of each meeting
    /// `MOVED` until the full reload (also requested here) lands.
    pub fn note_moved(&self, slot: u16, addr: &str) {
        self.request_refresh();
        self.set_owner(slot, addr);
    }

    /// Makes `addr` the owner of `slot` in the current map at once (the migration engine
    /// calls this right after it hands a slot over).
    pub fn set_owner(&self, slot: u16, addr: &str) {
        self.set_owners(&[slot], addr)
    }

    /// Points every slot of `slots` at `addr` in one new snapshot (a batch of slots handed
    /// over together costs one map install, not one per slot).
    pub fn set_owners(&self, slots: &[u16], addr: &str) {
        let addr = normalize_addr(addr);
        let _guard = self.install_lock.lock();
        let Some(current) = self.snapshot() else {
            return;
        };
        let changed = slots.iter().any(|&slot| {
            current
                .map
                .owner(slot)
                .map(|i| current.map.nodes[i].addr.as_str())
                != Some(addr.as_str())
        });
        if !changed {
            return;
        }
        let map = current.map.with_owners(slots, &addr);
        self.patches.fetch_add(1, Ordering::Relaxed);
        self.install_locked(
            map,
            current.commands.clone(),
            current.server_version.clone(),
        );
    }

    /// Makes `map` current (a new epoch), keeping pools of nodes that stay.
    pub fn install(&self, map: SlotMap, commands: Arc<CommandTable>, server_version: Arc<str>) {
        let _guard = self.install_lock.lock();
        self.install_locked(map, commands, server_version);
    }

    fn install_locked(&self, map: SlotMap, commands: Arc<CommandTable>, server_version: Arc<str>) {
        let pools: Vec<Arc<NodePool>> = map.nodes.iter().map(|n| self.pool_for(&n.addr)).collect();
        {
            let mut registry = self.pools.lock();
            registry.retain(|addr, _| map.nodes.iter().any(|n| &n.addr == addr));
        }
        if let Some(previous) = self.snapshot() {
            let mut successions = self.successions.lock();
            for (gone, heir) in successions.observe(&previous.map, &map) {
                tracing::warn!(
                    gone = %gone,
                    successor = %heir,
                    "a master left the slot map and another took all its slots (a failover)"
                );
            }
        }
        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            epoch,
            masters = map.nodes.len(),
            covered = map.covered(),
            "slot map updated"
        );
        let serving = map.serving_nodes();
        self.current.store(Some(Arc::new(Snapshot {
            epoch,
            map,
            pools,
            serving,
            commands,
            server_version,
        })));
        // After the store: whoever sees the new epoch in /metrics also sees the new map.
        self.metrics.slot_map_epoch.set(epoch as i64);
        if let Some(snapshot) = self.snapshot() {
            self.metrics.slots_per_node.reset();
            let mut counts = vec![0i64; snapshot.map.nodes.len()];
            for slot in 0..crate::cluster::SLOT_COUNT as u16 {
                if let Some(i) = snapshot.map.owner(slot) {
                    counts[i] += 1;
                }
            }
            for (node, count) in snapshot.map.nodes.iter().zip(counts) {
                self.metrics
                    .slots_per_node
                    .with_label_values(&[&node.addr])
                    .set(count);
            }
        }
        self.metrics.mark_refreshed(now_secs());
    }

    /// Refreshes periodically and on request until `shutdown`.
    pub async fn run_refresher(self: Arc<Self>, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(self.refresh_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cause = RefreshCause::Startup;
        loop {
            if let Err(error) = self.refresh(cause).await {
                tracing::warn!(%error, "slot map refresh failed");
            }
            let retry_soon = self.snapshot().is_none();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)), if retry_soon => cause = RefreshCause::Startup,
                _ = interval.tick(), if !retry_soon => cause = RefreshCause::Periodic,
                _ = self.refresh_wanted.notified() => {
                    // Let a burst of redirects settle into one reload.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    cause = RefreshCause::Redirect;
                }
            }
        }
    }
}

/// True when both maps give every slot to the same address.
fn same_owners(a: &SlotMap, b: &SlotMap) -> bool {
    (0..crate::cluster::SLOT_COUNT as u16).all(|slot| {
        let owner = |m: &SlotMap| m.owner(slot).map(|i| m.nodes[i].addr.clone());
        owner(a) == owner(b)
    })
}

/// Canonical `host:port` (IPv6 in brackets), so one node never gets two pools.
pub fn normalize_addr(addr: &str) -> String {
    match split_host_port(addr) {
        Ok((host, port)) => join_addr(host, i64::from(port)),
        Err(_) => addr.to_string(),
    }
}

/// Reads `redis_version` from an `INFO server` reply.
fn redis_version(raw: &[u8]) -> String {
    crate::protocol::scan::string(raw)
        .map(String::from_utf8_lossy)
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("redis_version:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Why the slot map could not be read or installed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TopologyError {
    /// A node could not be asked.
    #[error("{addr}: {source}")]
    Node {
        /// The node.
        addr: String,
        /// Why.
        #[source]
        source: crate::error::UpstreamError,
    },
    /// A node's map reply could not be read.
    #[error("{addr}: {source}")]
    Map {
        /// The node.
        addr: String,
        /// Why.
        #[source]
        source: super::slot_map::MapError,
    },
    /// A node's `COMMAND` reply could not be read.
    #[error("{addr}: {source}")]
    Commands {
        /// The node.
        addr: String,
        /// Why.
        #[source]
        source: crate::protocol::command::CommandTableError,
    },
    /// The node owns no slots at all (not part of a cluster yet).
    #[error("{addr}: node reports no slots assigned")]
    NoSlots {
        /// The node.
        addr: String,
    },
    /// The node does not know the owner of every slot yet.
    #[error("{addr}: its view covers only {covered} slots")]
    Partial {
        /// The node.
        addr: String,
        /// Slots it knows an owner of.
        covered: usize,
    },
    /// A master sees other owners than the others do.
    #[error("{addr} does not agree with the other masters about slot ownership yet")]
    Disagrees {
        /// The master.
        addr: String,
    },
    /// No node gave a usable map: what each one said.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    NoNode(Vec<TopologyError>),
}
