//! `hostenv-activate status`: what the last deployments did on this node,
//! and whether a run holds the lock now, from the journal alone, so it
//! answers while the provider is down. A pure view of the journal's records
//! and the lock's holder, rendered as text or as JSON with a
//! `formatVersion` for scripts.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;

use crate::model::journal::{ActionRecord, ActionState, Delivery};
use crate::model::text::escape;
use crate::model::{EventPayload, Phase, TerminalStatus};
use crate::ports::{JournalScan, LockHolder};

/// The JSON document's version; bumped when a field changes meaning.
pub const FORMAT_VERSION: u32 = 1;

/// How many runs the report shows.
pub const MAX_RUNS_SHOWN: usize = 20;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub format_version: u32,
    /// The node whose journal this is (`None`: every node's in the directory).
    pub node: Option<String>,
    pub state_dir: String,
    /// A run holding the node's lock now.
    pub in_progress: Option<InProgress>,
    /// Why the lock could not be looked at (then `in_progress` is unknown).
    pub lock_problem: Option<String>,
    /// Journal files that could not be used, or why the journal could not
    /// be listed at all.
    pub journal_problems: Vec<String>,
    /// The journal could be listed: `runs` is all it knows (not merely
    /// what could be read of it).
    pub journal_listed: bool,
    /// The last runs, newest first.
    pub runs: Vec<RunView>,
    /// Terminal events a later run still has to deliver.
    pub undelivered: Vec<Undelivered>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InProgress {
    pub pid: Option<u32>,
    pub since: Option<Timestamp>,
    pub sha: Option<String>,
    /// The job it works on, once its journal says so.
    pub job: Option<String>,
    /// The action it is on (or last touched).
    pub action: Option<ActionView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    pub job: String,
    pub node: String,
    pub sha: String,
    pub pid: u32,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    /// `None` while it runs, or when it died without saying.
    pub success: Option<bool>,
    pub outcome: Option<String>,
    /// The actions this run worked on, as the journal has them now.
    pub actions: Vec<ActionView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionView {
    pub index: usize,
    pub op: String,
    pub user: String,
    /// `started` or `finished`.
    pub state: &'static str,
    pub status: Option<TerminalStatus>,
    pub duration_seconds: Option<f64>,
    pub snapshots: BTreeMap<String, String>,
    pub message: Option<String>,
    pub delivery: Option<Delivery>,
    /// Taken over from the provider's record, not run by this node.
    pub adopted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Undelivered {
    pub job: String,
    pub node: String,
    pub phase: Phase,
    pub status: TerminalStatus,
    pub message: String,
}

fn action_view(a: &ActionRecord) -> ActionView {
    let mut view = ActionView {
        index: a.index,
        op: a.op.to_string(),
        user: a.user.to_string(),
        state: "started",
        status: None,
        duration_seconds: None,
        snapshots: BTreeMap::new(),
        message: None,
        delivery: None,
        adopted: false,
    };
    if let ActionState::Finished {
        started_at,
        finished_at,
        adopted,
        event,
    } = &a.state
    {
        view.state = "finished";
        view.status = Some(event.terminal.status);
        view.duration_seconds = Some(finished_at.duration_since(*started_at).as_secs_f64());
        view.message = Some(event.terminal.message.clone());
        view.delivery = Some(event.delivery);
        view.adopted = *adopted;
        if let Some(EventPayload::Backup(payload)) = &event.terminal.payload {
            view.snapshots = payload
                .snapshots
                .iter()
                .map(|(k, id)| (k.to_string(), id.clone()))
                .collect();
        }
    }
    view
}

/// The report, from what the journal `scan` found and the lock's `holder`.
pub fn gather(
    node: Option<&str>,
    state_dir: &str,
    scan: &JournalScan,
    holder: Result<Option<LockHolder>, String>,
) -> Status {
    let records = scan.records.as_slice();
    let journal_problems: Vec<String> = scan
        .unlisted
        .iter()
        .chain(&scan.unreadable)
        .cloned()
        .collect();
    let (holder, lock_problem) = match holder {
        Ok(holder) => (holder, None),
        Err(why) => (None, Some(why)),
    };
    let mut runs: Vec<RunView> = records
        .iter()
        .flat_map(|record| {
            record.runs.iter().map(move |run| RunView {
                job: record.job.to_string(),
                node: record.node.to_string(),
                sha: record.sha.clone(),
                pid: run.pid,
                started_at: run.started_at,
                ended_at: run.ended.as_ref().map(|e| e.at),
                success: run.ended.as_ref().map(|e| e.success),
                outcome: run.ended.as_ref().map(|e| e.message.clone()),
                actions: record.touched_by(run).map(action_view).collect(),
            })
        })
        .collect();
    runs.sort_by_key(|r| std::cmp::Reverse(r.started_at));
    runs.truncate(MAX_RUNS_SHOWN);

    let in_progress = holder.map(|h| {
        // The holder's run: the newest unfinished run with its pid.
        let current = records.iter().find_map(|record| {
            let run = record.runs.last()?;
            (Some(run.pid) == h.pid && run.ended.is_none()).then_some((record, run))
        });
        let action = current.and_then(|(record, run)| {
            let touched: Vec<&ActionRecord> = record.touched_by(run).collect();
            touched
                .iter()
                .find(|a| matches!(a.state, ActionState::Started { .. }))
                .or(touched.last())
                .map(|a| action_view(a))
        });
        InProgress {
            pid: h.pid,
            since: h.since,
            sha: h.sha,
            job: current.map(|(record, _)| record.job.to_string()),
            action,
        }
    });

    let undelivered = records
        .iter()
        .flat_map(|record| {
            record.pending().into_iter().map(move |p| Undelivered {
                job: record.job.to_string(),
                node: record.node.to_string(),
                phase: p.of.phase(),
                status: p.terminal.status,
                message: p.terminal.message,
            })
        })
        .collect();

    Status {
        format_version: FORMAT_VERSION,
        node: node.map(str::to_owned),
        state_dir: state_dir.to_owned(),
        in_progress,
        lock_problem,
        journal_problems,
        journal_listed: scan.unlisted.is_none(),
        runs,
        undelivered,
    }
}

/// A time for a person: to the second, in UTC.
fn when(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn action_line(a: &ActionView) -> String {
    let mut line = format!("{}. {} {}: ", a.index + 1, a.op, a.user);
    match (a.status, a.duration_seconds) {
        (Some(status), Some(secs)) => line.push_str(&format!("{status} in {secs:.1}s")),
        _ => line.push_str("started, not finished"),
    }
    if a.adopted {
        line.push_str(", taken from the provider's record");
    }
    if !a.snapshots.is_empty() {
        let snaps: Vec<String> = a
            .snapshots
            .iter()
            .map(|(k, id)| format!("{k}={}", escape(id)))
            .collect();
        line.push_str(&format!(", snapshots {}", snaps.join(" ")));
    }
    match a.delivery {
        Some(Delivery::Pending) => line.push_str(", NOT DELIVERED yet"),
        Some(Delivery::Dropped) => line.push_str(", dropped (the job was closed)"),
        _ => {}
    }
    if let Some(message) = &a.message {
        line.push_str(&format!("\n      \"{}\"", escape(message)));
    }
    line
}

/// Human-readable rendering. Text that may come from a user (messages,
/// problems, snapshot ids) is escaped ([`escape`]): one line stays one line
/// on the operator's terminal. The JSON rendering keeps it as it is.
pub fn render_text(status: &Status) -> String {
    let mut out = String::new();
    let node = status
        .node
        .as_deref()
        .map(|n| format!("node {n}"))
        .unwrap_or_else(|| "every node".to_owned());
    out.push_str(&format!(
        "hostenv-activate status of {node} (journal {})\n\n",
        status.state_dir
    ));
    match &status.in_progress {
        None => match &status.lock_problem {
            None => out.push_str("No run holds the lock now.\n"),
            Some(why) => out.push_str(&format!(
                "Cannot tell whether a run holds the lock: {}\n",
                escape(why)
            )),
        },
        Some(run) => {
            out.push_str(&format!(
                "A run holds the lock now: pid {}, since {}, commit {}",
                run.pid.map_or("unknown".to_owned(), |p| p.to_string()),
                run.since.map_or("unknown".to_owned(), when),
                escape(run.sha.as_deref().unwrap_or("unknown")),
            ));
            if let Some(job) = &run.job {
                out.push_str(&format!(", job {}", escape(job)));
            }
            out.push('\n');
            if let Some(action) = &run.action {
                out.push_str(&format!("  now: {}\n", action_line(action)));
            }
        }
    }
    for problem in &status.journal_problems {
        out.push_str(&format!("Journal problem: {}\n", escape(problem)));
    }
    if !status.journal_listed {
        out.push_str("\nCannot tell which runs are recorded: the journal could not be listed.\n");
    } else if status.runs.is_empty() {
        out.push_str("\nNo run is recorded in the journal.\n");
    } else {
        out.push_str("\nLast runs, newest first:\n");
    }
    for run in &status.runs {
        let outcome = match (run.success, &run.outcome) {
            (Some(true), Some(m)) => format!("succeeded: {}", escape(m)),
            (Some(false), Some(m)) => format!("FAILED: {}", escape(m)),
            _ => "did not finish (still running, or it died; after a power loss, maybe only its end was lost)".to_owned(),
        };
        let ended = run
            .ended_at
            .map(|t| format!(", ended {}", when(t)))
            .unwrap_or_default();
        out.push_str(&format!(
            "\n- job {} (node {}), commit {}, pid {}: started {}{ended}\n  {outcome}\n",
            run.job,
            run.node,
            escape(&run.sha),
            run.pid,
            when(run.started_at)
        ));
        for a in &run.actions {
            out.push_str(&format!("    {}\n", action_line(a)));
        }
    }
    if status.undelivered.is_empty() {
        out.push_str("\nNo undelivered events.\n");
    } else {
        out.push_str(&format!(
            "\n{} undelivered event(s); the next run delivers them first:\n",
            status.undelivered.len()
        ));
        for u in &status.undelivered {
            out.push_str(&format!(
                "  job {} (node {}): ({}, {}) \"{}\"\n",
                u.job,
                u.node,
                u.phase,
                u.status,
                escape(&u.message)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
