//! The health check, inside a bus helper: the units that `default.target`
//! and `hostenv.target` want or require, watched until they settle
//! (behaviour.md, "Healthy, not just exited"). It wakes on the manager's
//! signals (`PropertiesChanged`, `JobRemoved`) and on the 2 s second look
//! at young units, never on a timer slice: a healthy activation that
//! started nothing costs one round of reads.

use std::collections::BTreeSet;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use anyhow::Context;
use nix::time::{clock_gettime, ClockId};

use super::batch::Batch;
use super::proxies::UnitRow;
use super::session::Session;
use super::{unit_object_path, UNIT_INTERFACE};
use crate::model::UnhealthyUnit;
use crate::ports::{is_loaded, Deadline, Health};

/// The targets whose units make the environment.
const TARGETS: [&str; 2] = ["default.target", "hostenv.target"];
/// A unit that became active less than this ago is looked at again.
const SECOND_LOOK: Duration = Duration::from_secs(2);
/// Units reported at most (the answer stays small whatever the user has).
const MAX_REPORTED: usize = 50;

/// One unit as last read.
struct Seen {
    unit: String,
    active_state: String,
    sub_state: String,
    /// A job is pending, or the unit is between states.
    settling: bool,
    /// Active for less than [`SECOND_LOOK`]: when to look again.
    young_until: Option<Deadline>,
}

/// Waits until every unit has settled (or `deadline`), then tells which
/// are failed or still not settled. Each round is one `ListUnitsByNames`
/// (state and pending job of every unit) and, for each unit that is
/// active, a read of when it became so: one round trip for a few units
/// ([`READ_TOGETHER`]). The signal watch is set up only when the
/// first round finds something still settling (then a second round follows
/// it, so no change between the two is missed): a healthy activation costs
/// the reads of one round.
pub(super) fn check(session: &Session, deadline: Deadline) -> anyhow::Result<Health> {
    let units = wanted_units(session)?;
    if units.is_empty() {
        return Ok(Health::Healthy { looked_at: 0 });
    }
    let names: Vec<&str> = units.iter().map(String::as_str).collect();
    let seen = look(session, &names)?;
    if settled(&seen).is_none() || deadline.reached() {
        return Ok(verdict(session, seen, units.len()));
    }
    let changes = session.watch_changes()?;
    loop {
        // Drop the changes read below: they are in what this round sees.
        while changes.try_recv().is_ok() {}
        let seen = look(session, &names)?;
        let Some(wake) = settled(&seen) else {
            return Ok(verdict(session, seen, units.len()));
        };
        if deadline.reached() {
            return Ok(verdict(session, seen, units.len()));
        }
        // Wake on the next change, the next second look or the deadline.
        let wake = wake.map_or(deadline, |t| t.earlier(deadline));
        match changes.recv_timeout(wake.remaining()) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => anyhow::bail!(
                "{}: lost the connection to the user's systemd while watching its services settle",
                session.who
            ),
        }
    }
}

/// `None` when every unit has settled and none is young; else when to look
/// again at the latest (`Some(None)`: on the next change only).
fn settled(seen: &[Seen]) -> Option<Option<Deadline>> {
    let next_look = seen.iter().filter_map(|s| s.young_until).min();
    let settling = seen.iter().any(|s| s.settling);
    (settling || next_look.is_some()).then_some(next_look)
}

/// The names in `Wants` and `Requires` of each target that is loaded: the
/// `LoadState`, `Wants` and `Requires` of both targets in one round trip.
fn wanted_units(session: &Session) -> anyhow::Result<BTreeSet<String>> {
    let context = || format!("{}: cannot look at {}", session.who, TARGETS.join(" and "));
    let mut batch = Batch::default();
    let mut reads = Vec::new();
    for target in TARGETS {
        let path = unit_object_path(target);
        reads.push((
            target,
            batch.get(&path, UNIT_INTERFACE, "LoadState")?,
            batch.get(&path, UNIT_INTERFACE, "Wants")?,
            batch.get(&path, UNIT_INTERFACE, "Requires")?,
        ));
    }
    let mut replies = batch.send(&session.conn).with_context(context)?;
    let mut units = BTreeSet::new();
    for (target, state, wants, requires) in reads {
        let context = || format!("{}: cannot read what {target} wants", session.who);
        if !is_loaded(&replies.value::<String>(state).with_context(context)?) {
            continue;
        }
        units.extend(replies.value::<Vec<String>>(wants).with_context(context)?);
        units.extend(
            replies
                .value::<Vec<String>>(requires)
                .with_context(context)?,
        );
    }
    Ok(units)
}

/// Up to this many units, a round reads every unit's start time beside
/// the states (one round trip); more, only the active ones' after the
/// states (two round trips, but no read for a unit that is not active).
const READ_TOGETHER: usize = 32;

/// The loaded units among `names` as they are now (a `Wants=` of something
/// absent is no failure): their states (`ListUnitsByNames`, which loads
/// each name as a read of its object would) and when each active one
/// became so.
fn look(session: &Session, names: &[&str]) -> anyhow::Result<Vec<Seen>> {
    let context = || format!("{}: cannot read the state of its services", session.who);
    let together = names.len() <= READ_TOGETHER;
    let mut batch = Batch::default();
    let list = batch.manager("ListUnitsByNames", &(names,))?;
    let mut entered = std::collections::HashMap::new();
    if together {
        for name in names {
            let path = unit_object_path(name);
            let slot = batch.get(&path, UNIT_INTERFACE, "ActiveEnterTimestampMonotonic")?;
            entered.insert((*name).to_owned(), slot);
        }
    }
    let mut replies = batch.send(&session.conn).with_context(context)?;
    let rows: Vec<UnitRow> = replies
        .take(list)
        .and_then(|reply| reply.body().deserialize())
        .with_context(context)?;
    let mut later = Batch::default();
    let mut read = Vec::with_capacity(rows.len());
    for row in rows.into_iter().filter(|row| is_loaded(&row.2)) {
        let (unit, active_state, sub_state, job, path) = (row.0, row.3, row.4, row.7, row.6);
        let settling = job != 0
            || matches!(
                active_state.as_str(),
                "activating" | "deactivating" | "reloading" | "refreshing"
            );
        let since = match (active_state == "active", entered.remove(&unit)) {
            (false, _) => None,
            (true, Some(slot)) => Some(Since::Read(slot)),
            (true, None) => Some(Since::Later(later.get(
                &path,
                UNIT_INTERFACE,
                "ActiveEnterTimestampMonotonic",
            )?)),
        };
        read.push((unit, active_state, sub_state, settling, since));
    }
    let mut later = if read.iter().any(|r| matches!(r.4, Some(Since::Later(_)))) {
        Some(later.send(&session.conn).with_context(context)?)
    } else {
        None
    };
    let now = monotonic_micros();
    let mut seen = Vec::with_capacity(read.len());
    for (unit, active_state, sub_state, settling, since) in read {
        let value = match (since, later.as_mut()) {
            (Some(Since::Read(slot)), _) => Some(replies.value::<u64>(slot)),
            (Some(Since::Later(slot)), Some(later)) => Some(later.value::<u64>(slot)),
            _ => None,
        };
        let young_until = match value {
            Some(value) => {
                let entered = value.with_context(|| {
                    format!("{}: cannot read when {unit} became active", session.who)
                })?;
                young_until(entered, now)
            }
            None => None,
        };
        seen.push(Seen {
            unit,
            active_state,
            sub_state,
            settling,
            young_until,
        });
    }
    Ok(seen)
}

/// Where an active unit's start time is read.
enum Since {
    /// In the round's batch, beside the states.
    Read(super::batch::Slot),
    /// In a second batch, once the states showed it active.
    Later(super::batch::Slot),
}

/// When a unit that entered `active` at `entered` (µs, CLOCK_MONOTONIC)
/// has been active for [`SECOND_LOOK`], if that is still ahead at `now`.
fn young_until(entered: u64, now: u64) -> Option<Deadline> {
    let second_look = u64::try_from(SECOND_LOOK.as_micros()).unwrap_or(u64::MAX);
    let ripe = entered.saturating_add(second_look);
    (entered != 0 && ripe > now).then(|| Deadline::after(Duration::from_micros(ripe - now)))
}

fn monotonic_micros() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000
            + u64::try_from(t.tv_nsec()).unwrap_or(0) / 1000
    })
}

/// Failed units, and (at the bound) units still not settled.
fn verdict(session: &Session, seen: Vec<Seen>, looked_at: usize) -> Health {
    let mut units: Vec<UnhealthyUnit> = seen
        .into_iter()
        .filter(|s| s.active_state == "failed" || s.settling || s.young_until.is_some())
        .take(MAX_REPORTED)
        .map(|s| {
            let status = session.status(&s.unit);
            UnhealthyUnit {
                result: status.result.filter(|_| s.unit.ends_with(".service")),
                exec_main_status: status
                    .exec_main_status
                    .filter(|_| s.unit.ends_with(".service")),
                unit: s.unit,
                active_state: s.active_state,
                sub_state: s.sub_state,
            }
        })
        .collect();
    units.sort_by(|a, b| a.unit.cmp(&b.unit));
    if units.is_empty() {
        Health::Healthy { looked_at }
    } else {
        Health::Unhealthy { units }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn young_units_are_looked_at_again_two_seconds_after_they_became_active() {
        let now = 100_000_000;
        assert!(young_until(0, now).is_none(), "never active");
        assert!(
            young_until(now - 3_000_000, now).is_none(),
            "active for 3 s"
        );
        let again = young_until(now - 500_000, now).expect("active for 0.5 s");
        let wait = again.remaining();
        assert!(
            wait <= Duration::from_millis(1500) && wait > Duration::from_millis(1000),
            "{wait:?}"
        );
    }
}
