//! Crash recovery: finish what a previous run (of this proxy, or of `redis-cli`) left open.
//!
//! On start the proxy reads its journal and asks every master for `CLUSTER NODES`, whose
//! `myself` line shows the node's open slots. Slots of journaled jobs are finished by the
//! job itself when it resumes (every step of a move may be repeated). Open slots no journal
//! explains are closed by the rules of [`super::repair`], once they have stayed the same for
//! `migration.repair_grace_ms` (another tool may be moving them). `POST /cluster/fix`
//! ([`fix_open_slots`]) repairs at once what no unfinished job is moving.
//!
//! All of it happens under the migration lease, so a proxy never "repairs" a slot another
//! live proxy is moving.

use super::context::Conns;
use super::error::Error;
use super::job::Job;
use super::lease::LeaseError;
use super::repair::{open_slots, repair};
use super::service::Migrations;
use super::types::MoveError;
use std::sync::Arc;
use std::time::Duration;

/// Runs once after start: repairs open slots and resumes journaled jobs; new jobs wait
/// until it is done.
pub async fn recover(service: Arc<Migrations>) {
    recover_inner(&service).await;
    service.mark_recovered();
    service.publish();
}

async fn recover_inner(service: &Arc<Migrations>) {
    while service.topology.snapshot().is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let records = service.journal().load_all();
    loop {
        let open = match open_slots(&service.ctx).await {
            Ok(open) => open,
            Err(e) => {
                tracing::warn!(error = %e, "recovery: cannot read every master's CLUSTER NODES; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if records.is_empty() && open.is_empty() {
            return;
        }
        match service.lease.acquire().await {
            Ok(()) => {}
            Err(LeaseError::HeldBy(who)) => {
                tracing::info!(holder = %who, "recovery waits: another proxy holds the migration lease");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            Err(LeaseError::Unavailable(why)) => {
                tracing::warn!(error = %why, "recovery: cannot take the migration lease; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        // Re-read under the lease: what we saw before may have been another proxy's work.
        let open = open_slots(&service.ctx).await.unwrap_or(open);
        let journaled: std::collections::BTreeSet<u16> = records
            .iter()
            .flat_map(|r| r.moves().into_iter().map(|m| m.slot))
            .collect();
        // A slot no journal explains may be an operator's tool (redis-cli) at work right now:
        // only slots that stay exactly as they are through the grace period are repaired.
        let mut open = open;
        if open.keys().any(|s| !journaled.contains(s)) {
            tokio::time::sleep(service.repair_grace).await;
            let later = open_slots(&service.ctx).await.unwrap_or_default();
            open.retain(|slot, state| journaled.contains(slot) || later.get(slot) == Some(state));
        }
        let mut conns = Conns::new(service.ctx.settings.clone());
        for (slot, state) in &open {
            if journaled.contains(slot) {
                continue;
            }
            for note in repair(&service.ctx, &mut conns, *slot, state).await {
                service.note_repair(note);
            }
        }
        for record in records {
            let id = record.id.clone();
            let state = record.state;
            service.note_repair(format!(
                "job {id} restored from the journal ({state:?}, {} slots left)",
                record.moves().len()
            ));
            service.restore(Arc::new(Job::from_record(record))).await;
        }
        service.lease.release().await;
        return;
    }
}

/// What [`fix_open_slots`] did.
#[derive(Debug, Default)]
pub struct FixReport {
    /// Open slots found.
    pub open_before: usize,
    /// What was repaired, slot by slot.
    pub notes: Vec<String>,
    /// Open slots left alone because an unfinished job is moving them.
    pub skipped: Vec<u16>,
    /// Slots still open afterwards.
    pub still_open: Vec<u16>,
}

/// Repairs every open slot that no unfinished job is moving, now (the operator asked: no
/// grace period), under the migration lease.
pub async fn fix_open_slots(service: &Arc<Migrations>) -> Result<FixReport, Error> {
    service.lease.acquire().await?;
    let result = fix_locked(service).await;
    service.lease.release().await;
    let report = result.map_err(|e| Error::Unavailable(e.to_string()))?;
    for note in &report.notes {
        service.note_repair(note.clone());
    }
    Ok(report)
}

async fn fix_locked(service: &Arc<Migrations>) -> Result<FixReport, MoveError> {
    let open = open_slots(&service.ctx).await?;
    let busy: std::collections::BTreeSet<u16> = service
        .jobs()
        .iter()
        .filter(|j| !j.lock().state.is_final())
        .flat_map(|j| j.pending_slots())
        .collect();
    let mut report = FixReport {
        open_before: open.len(),
        ..FixReport::default()
    };
    let mut conns = Conns::new(service.ctx.settings.clone());
    for (slot, state) in &open {
        if busy.contains(slot) {
            report.skipped.push(*slot);
            continue;
        }
        report
            .notes
            .extend(repair(&service.ctx, &mut conns, *slot, state).await);
    }
    report.still_open = open_slots(&service.ctx)
        .await?
        .into_keys()
        .filter(|s| !report.skipped.contains(s))
        .collect();
    Ok(report)
}
