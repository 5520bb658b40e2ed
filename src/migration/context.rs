//! What every slot move needs — settings, the proxy's map, the throttle, the metrics, the
//! block-time model — and the control calls it makes on a node: `CLUSTER SETSLOT`,
//! `GETKEYSINSLOT`, `COUNTKEYSINSLOT`, `CLUSTER NODES` and the one `MIGRATE` every move and
//! repair sends ([`MoveContext::migrate_command`]).

use super::throttle::Throttle;
use super::types::{classify, CostModel, MoveError};
use crate::cluster::nodes::{self, NodeLine};
use crate::cluster::Topology;
use crate::config::split_host_port;
use crate::protocol::scan;
use crate::upstream::control::{error_text, ControlConn};
use crate::upstream::Settings;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Settings and shared pieces every move needs.
#[derive(Debug)]
pub struct MoveContext {
    /// How to reach nodes (AUTH included).
    pub settings: Arc<Settings>,
    /// The proxy's map, patched after each move.
    pub topology: Arc<Topology>,
    /// Keys per `MIGRATE`.
    pub batch_keys: usize,
    /// Slots of one source and target moved together, each step pipelined for all of them
    /// (`migration.batch_slots`; 1: slot by slot).
    pub batch_slots: usize,
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
    pub costs: CostModel,
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

    /// Sends `commands` to `addr` in one write and returns each one's reply in order (error
    /// replies as `Err(text)`): many slots' steps for the price of one round trip. A
    /// connection failure is `MoveError::Retry` for the whole pipeline.
    pub async fn pipeline<A: AsRef<[u8]>>(
        &self,
        conns: &mut Conns,
        addr: &str,
        commands: &[Vec<A>],
        timeout: Duration,
    ) -> Result<Vec<Result<Bytes, String>>, MoveError> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let mut payload = Vec::new();
        for command in commands {
            payload.extend_from_slice(&crate::protocol::request::encode_command(command));
        }
        let replies = conns
            .get(addr)
            .call_raw(&payload, commands.len(), timeout)
            .await
            .map_err(|e| MoveError::Retry(e.to_string()))?;
        Ok(replies
            .into_iter()
            .map(|reply| match error_text(&reply) {
                Some(text) => Err(text),
                None => Ok(reply),
            })
            .collect())
    }

    /// Like [`MoveContext::call`], with error replies classified as a [`MoveError`].
    pub async fn must(
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
        let (host, port) = split_host_port(to).map_err(|e| MoveError::Fatal(e.to_string()))?;
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

    /// The node's own `CLUSTER NODES` view: its `myself` line and every other line.
    pub async fn node_view(
        &self,
        conns: &mut Conns,
        addr: &str,
    ) -> Result<(NodeLine, Vec<NodeLine>), MoveError> {
        let reply = self
            .call(conns, addr, &[b"CLUSTER", b"NODES"], self.call_timeout)
            .await?
            .map_err(|e| MoveError::Retry(format!("{addr}: CLUSTER NODES: {e}")))?;
        let text = scan::string(&reply)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .ok_or_else(|| MoveError::Retry(format!("{addr}: odd CLUSTER NODES reply")))?;
        let lines = nodes::parse(&text).map_err(|e| MoveError::Retry(e.to_string()))?;
        let me = nodes::myself(&lines)
            .cloned()
            .ok_or_else(|| MoveError::Retry(format!("{addr}: no myself line")))?;
        Ok((me, lines))
    }
}
