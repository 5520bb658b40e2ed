//! A Redis Cluster of real processes on loopback, and what tests ask of it.

use super::node::{free_port, spawn_server, spawn_server_with, Node, ServerOptions};
use super::{certs, wait_until};
use std::process::Command;
use std::time::{Duration, Instant};

const SLOTS: u16 = 16384;

/// A Redis Cluster of real processes.
pub struct Cluster {
    dir_path: std::path::PathBuf,
    /// Masters owning slots, then spare masters without slots, then the replicas (one per
    /// slot-owning master, in master order) when started with [`Cluster::start_replicated`].
    /// Roles change with failovers; indices do not.
    pub nodes: Vec<Node>,
    masters: usize,
    spares: usize,
    options: OwnedOptions,
    _dir: tempfile::TempDir,
}

/// What [`Cluster::restart`] and [`Cluster::spawn_loose_node`] need to start a node alike
/// (TLS nodes are not restarted).
struct OwnedOptions {
    own_bus_ports: bool,
    password: Option<String>,
}

impl OwnedOptions {
    fn server(&self, port: u16) -> ServerOptions<'_> {
        ServerOptions {
            cluster: true,
            tls: None,
            bus_port: self.own_bus_ports.then(|| free_bus_port(port)),
            password: self.password.as_deref(),
        }
    }
}

/// How every node of a cluster is started, beyond the defaults.
#[derive(Default, Clone, Copy)]
pub struct ClusterOptions<'a> {
    /// TLS on a second port and over the cluster bus.
    pub tls: Option<&'a certs::Certs>,
    /// Every node's cluster bus on a free port of its own, not Redis' default port + 10000.
    pub own_bus_ports: bool,
    /// Every node requires this password.
    pub password: Option<&'a str>,
}

/// A free port for the bus of the node on `port`, never `port + 10000`.
fn free_bus_port(port: u16) -> u16 {
    loop {
        let bus = free_port();
        if bus != port + 10000 {
            return bus;
        }
    }
}

impl ClusterOptions<'_> {
    fn server(&self, port: u16) -> ServerOptions<'_> {
        ServerOptions {
            cluster: true,
            tls: self.tls,
            bus_port: self.own_bus_ports.then(|| free_bus_port(port)),
            password: self.password,
        }
    }
}

impl Cluster {
    /// `masters` masters sharing the slots evenly, plus `spares` empty masters.
    pub fn start(masters: usize, spares: usize) -> Cluster {
        Self::start_with(masters, spares, ClusterOptions::default())
    }

    /// Like [`Cluster::start`], with every node also serving TLS (see [`Node::tls_port`]) and
    /// the cluster bus over TLS; the tests keep using the plain ports.
    pub fn start_tls(masters: usize, certs: &certs::Certs) -> Cluster {
        Self::start_with(
            masters,
            0,
            ClusterOptions {
                tls: Some(certs),
                ..ClusterOptions::default()
            },
        )
    }

    /// `masters` masters sharing the slots evenly, each with one replica.
    pub fn start_replicated(masters: usize) -> Cluster {
        let cluster = Self::start_with(masters, 0, ClusterOptions::default());
        let mut cluster = cluster;
        for i in 0..masters {
            let replica = spawn_server(&cluster.dir_path, free_port(), true);
            let port = replica.port.to_string();
            let _: () = cluster.nodes[0].cmd(&["CLUSTER", "MEET", "127.0.0.1", &port]);
            cluster.nodes.push(replica);
            let master_id = cluster.nodes[i].id.clone();
            let replica = cluster.nodes.last().expect("replica");
            wait_until(
                Duration::from_secs(20),
                "the replica to learn its master",
                || {
                    redis::cmd("CLUSTER")
                        .arg("REPLICATE")
                        .arg(&master_id)
                        .query::<()>(&mut replica.conn())
                        .is_ok()
                },
            );
        }
        for replica in &cluster.nodes[masters..] {
            wait_until(Duration::from_secs(30), "the replica to sync", || {
                let info: String = replica.cmd(&["INFO", "replication"]);
                info.contains("master_link_status:up")
            });
        }
        cluster.wait_consistent();
        cluster
    }

    /// The replica started for master `index` by [`Cluster::start_replicated`].
    pub fn replica_of(&self, index: usize) -> &Node {
        &self.nodes[self.masters + self.spares + index]
    }

    /// `masters` masters sharing the slots evenly, plus `spares` empty masters, every node
    /// started as `options` say.
    pub fn start_with(masters: usize, spares: usize, options: ClusterOptions<'_>) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes: Vec<Node> = (0..masters + spares)
            .map(|_| {
                let port = free_port();
                spawn_server_with(dir.path(), port, options.server(port))
            })
            .collect();
        for (i, node) in nodes.iter().take(masters).enumerate() {
            let start = (SLOTS as usize * i / masters).to_string();
            let end = (SLOTS as usize * (i + 1) / masters - 1).to_string();
            let _: () = node.cmd(&["CLUSTER", "ADDSLOTSRANGE", &start, &end]);
        }
        for node in &nodes[1..] {
            // With TLS the cluster bus listens at the TLS port + 10000.
            let port = node.tls_port.unwrap_or(node.port).to_string();
            let bus = match options.tls {
                Some(_) => node.tls_port.map_or(node.bus_port, |p| p + 10000),
                None => node.bus_port,
            }
            .to_string();
            let _: () = nodes[0].cmd(&["CLUSTER", "MEET", "127.0.0.1", &port, &bus]);
        }
        let cluster = Cluster {
            dir_path: dir.path().to_path_buf(),
            nodes,
            masters,
            spares,
            options: OwnedOptions {
                own_bus_ports: options.own_bus_ports,
                password: options.password.map(str::to_string),
            },
            _dir: dir,
        };
        cluster.wait_consistent();
        cluster
    }

    /// Waits until every node reports `cluster_state:ok`, knows every node, and agrees on the
    /// owner of every slot.
    pub fn wait_consistent(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let views: Vec<Option<Vec<(i64, i64, u16)>>> = self
                .nodes
                .iter()
                .map(|n| node_view(n, self.nodes.len()))
                .collect();
            if views.iter().all(|v| v.is_some()) && views.windows(2).all(|w| w[0] == w[1]) {
                return;
            }
            if Instant::now() > deadline {
                // Say why, so that a rare failure explains itself.
                let states: Vec<String> = self
                    .nodes
                    .iter()
                    .zip(&views)
                    .map(|(n, v)| {
                        let info: String = n.try_cmd(&["CLUSTER", "INFO"]).unwrap_or_default();
                        let pick = |k: &str| {
                            info.lines()
                                .find(|l| l.starts_with(k))
                                .unwrap_or("")
                                .trim()
                                .to_string()
                        };
                        let nodes: String = n.try_cmd(&["CLUSTER", "NODES"]).unwrap_or_default();
                        format!(
                            "{}: {} {} view={v:?}\n{nodes}",
                            n.port,
                            pick("cluster_state"),
                            pick("cluster_known_nodes")
                        )
                    })
                    .collect();
                panic!(
                    "timed out after 60 s waiting for the cluster to become consistent:\n{}",
                    states.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills node `index` (SIGKILL); it keeps its port and its nodes.conf for [`Cluster::restart`].
    pub fn kill(&mut self, index: usize) {
        let _ = self.nodes[index].child.kill();
        let _ = self.nodes[index].child.wait();
    }

    /// Starts node `index` again on the same port and directory (same id and slots, no data).
    pub fn restart(&mut self, index: usize) {
        let (port, bus_port) = (self.nodes[index].port, self.nodes[index].bus_port);
        let mut options = self.options.server(port);
        options.bus_port = self.options.own_bus_ports.then_some(bus_port);
        let node = spawn_server_with(&self.dir_path, port, options);
        self.nodes[index] = node;
        self.wait_consistent();
    }

    /// Seed list for the proxy.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .take(self.masters)
            .map(|n| n.addr())
            .collect()
    }

    /// The node owning `slot`, from that node's own view.
    pub fn owner_of(&self, slot: u16) -> &Node {
        let owner_port: u16 = {
            let slots: Vec<(i64, i64, String, u16)> = slot_ranges(&self.nodes[0]);
            slots
                .iter()
                .find(|(s, e, _, _)| *s <= slot as i64 && slot as i64 <= *e)
                .map(|(_, _, _, p)| *p)
                .expect("slot is assigned")
        };
        self.nodes
            .iter()
            .find(|n| n.port == owner_port)
            .expect("owner is ours")
    }

    /// A key (`prefix:N`) in a slot the node listening on `port` owns.
    pub fn key_on(&self, port: u16, prefix: &str) -> String {
        (0..)
            .map(|i| format!("{prefix}:{i}"))
            .find(|k| {
                self.owner_of(slotproxy::cluster::key_slot(k.as_bytes()))
                    .port
                    == port
            })
            .expect("some key maps to every node")
    }

    /// Some master other than `node`.
    pub fn other_than(&self, node: &Node) -> &Node {
        self.nodes
            .iter()
            .take(self.masters)
            .find(|n| n.port != node.port)
            .expect("another master")
    }

    /// Starts moving `slot` from its owner to `target`: IMPORTING on the target, MIGRATING
    /// on the source, issued directly to the nodes behind the proxy's back.
    pub fn begin_migration(&self, slot: u16, source: &Node, target: &Node) {
        let s = slot.to_string();
        let _: () = target.cmd(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &source.id]);
        let _: () = source.cmd(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &target.id]);
    }

    /// MIGRATEs the given keys of a migrating slot from `source` to `target`.
    pub fn migrate_keys(&self, source: &Node, target: &Node, keys: &[String]) {
        let port = target.port.to_string();
        let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000"];
        if let Some(password) = &target.password {
            args.extend(["AUTH", password.as_str()]);
        }
        args.push("KEYS");
        args.extend(keys.iter().map(|k| k.as_str()));
        let _: String = source.cmd(&args);
    }

    /// Finishes a migration: every remaining key moved, then SETSLOT NODE on target, source
    /// and everyone else.
    pub fn finish_migration(&self, slot: u16, source: &Node, target: &Node) {
        let s = slot.to_string();
        loop {
            let keys: Vec<String> = source.cmd(&["CLUSTER", "GETKEYSINSLOT", &s, "100"]);
            if keys.is_empty() {
                break;
            }
            self.migrate_keys(source, target, &keys);
        }
        let _: () = target.cmd(&["CLUSTER", "SETSLOT", &s, "NODE", &target.id]);
        let _: () = source.cmd(&["CLUSTER", "SETSLOT", &s, "NODE", &target.id]);
        for node in self
            .nodes
            .iter()
            .filter(|n| n.port != source.port && n.port != target.port)
        {
            let _: () = node.cmd(&["CLUSTER", "SETSLOT", &s, "NODE", &target.id]);
        }
        self.wait_consistent();
    }
}

fn slot_ranges(node: &Node) -> Vec<(i64, i64, String, u16)> {
    let value: redis::Value = node.cmd(&["CLUSTER", "SLOTS"]);
    let mut out = Vec::new();
    if let redis::Value::Array(ranges) = value {
        for range in ranges {
            if let redis::Value::Array(fields) = range {
                let int = |v: &redis::Value| match v {
                    redis::Value::Int(i) => *i,
                    _ => -1,
                };
                if let (Some(s), Some(e), Some(redis::Value::Array(master))) =
                    (fields.first(), fields.get(1), fields.get(2))
                {
                    let host = match master.first() {
                        Some(redis::Value::BulkString(h)) => {
                            String::from_utf8_lossy(h).into_owned()
                        }
                        _ => String::new(),
                    };
                    let port = master.get(1).map(int).unwrap_or(0) as u16;
                    out.push((int(s), int(e), host, port));
                }
            }
        }
    }
    out.sort();
    out
}

fn node_view(node: &Node, expected_nodes: usize) -> Option<Vec<(i64, i64, u16)>> {
    let info: String = node.try_cmd(&["CLUSTER", "INFO"])?;
    let ok = info.contains("cluster_state:ok")
        && info.contains(&format!("cluster_known_nodes:{expected_nodes}"));
    if !ok {
        return None;
    }
    Some(
        slot_ranges(node)
            .into_iter()
            .map(|(s, e, _, p)| (s, e, p))
            .collect(),
    )
}

impl Cluster {
    /// Slots with a MIGRATING/IMPORTING marker on any node that answers (from each node's
    /// own view).
    pub fn open_slots(&self) -> Vec<String> {
        let mut open = Vec::new();
        for node in &self.nodes {
            let Some(text) = node.try_cmd::<String>(&["CLUSTER", "NODES"]) else {
                continue;
            };
            for line in text.lines().filter(|l| l.contains("myself")) {
                open.extend(
                    line.split_whitespace()
                        .filter(|w| w.starts_with('['))
                        .map(|w| format!("{}:{w}", node.port)),
                );
            }
        }
        open
    }

    /// Slots owned per node (by each node's own claim), in node order.
    pub fn slot_counts(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .map(|node| {
                let text: String = node.cmd(&["CLUSTER", "NODES"]);
                let me = text
                    .lines()
                    .find(|l| l.contains("myself"))
                    .unwrap_or("")
                    .to_string();
                me.split_whitespace()
                    .skip(8)
                    .filter(|w| !w.starts_with('['))
                    .map(|w| match w.split_once('-') {
                        Some((a, b)) => {
                            b.parse::<usize>().unwrap_or(0) - a.parse::<usize>().unwrap_or(0) + 1
                        }
                        None => 1,
                    })
                    .sum()
            })
            .collect()
    }

    /// Runs `redis-cli --cluster check` and returns (success, output).
    pub fn redis_cli_check(&self) -> (bool, String) {
        let mut cli = Command::new("redis-cli");
        if let Some(password) = &self.options.password {
            cli.args(["-a", password, "--no-auth-warning"]);
        }
        let out = cli
            .args(["--cluster", "check", &self.nodes[0].addr()])
            .output()
            .expect("run redis-cli --cluster check");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let clean = out.status.success()
            && text.contains("[OK] All nodes agree about slots configuration.")
            && text.contains("[OK] All 16384 slots covered.")
            && !text.contains("[WARNING]")
            && !text.contains("[ERR]");
        (clean, text)
    }

    /// Total keys over all masters (DBSIZE of each; replicas hold copies).
    pub fn total_keys(&self) -> i64 {
        self.nodes
            .iter()
            .filter(|n| n.is_master())
            .map(|n| n.cmd::<i64>(&["DBSIZE"]))
            .sum()
    }
}

impl Cluster {
    /// Starts a cluster-enabled node that is not part of the cluster (for `POST /nodes`).
    pub fn spawn_loose_node(&self) -> Node {
        let port = free_port();
        spawn_server_with(&self.dir_path, port, self.options.server(port))
    }
}
