//! One D-Bus connection to one user's systemd manager, and the reads and
//! waits built on it (unit state, settling, the job-signal watch).

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::Context;
use zbus::blocking::{fdo::DBusProxy, Connection, MessageIterator};
use zbus::message::Type as MessageType;
use zbus::names::BusName;
use zbus::proxy::CacheProperties;
use zbus::zvariant::OwnedObjectPath;
use zbus::MatchRule;

use super::batch::Batch;
use super::jobs::{job_removed, wait_until, JobWatch};
use super::proxies::{JobProxy, ManagerProxy, ServiceProxy, UnitProxy};
use super::{
    is_settled, unit_object_path, MANAGER_INTERFACE, MANAGER_PATH, SERVICE_INTERFACE, SYSTEMD_NAME,
    UNIT_INTERFACE,
};
use crate::ports::{Cancel, Deadline, UnitStatus};

/// One connection to one user's manager. Closing the connection on drop
/// also ends the job-signal reader thread.
pub(super) struct Session {
    pub(super) conn: Connection,
    pub(super) manager: ManagerProxy<'static>,
    /// "user <name> (uid <uid>)", for messages.
    pub(super) who: String,
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.conn.clone().close();
    }
}

impl Session {
    /// Waits (bounded) until the manager owns its name on the bus: right
    /// after `user@.service` starts, the bus can be up before the manager.
    pub(super) fn wait_for_manager(
        &self,
        deadline: Deadline,
        cancel: Option<&Cancel>,
        hint: &str,
    ) -> anyhow::Result<()> {
        let who = &self.who;
        let dbus = DBusProxy::new(&self.conn)
            .with_context(|| format!("{who}: cannot talk to the user's dbus-daemon"))?;
        let name = BusName::try_from(SYSTEMD_NAME)?;
        let mut last_error = None;
        let waited = wait_until(deadline, cancel, || {
            match dbus.name_has_owner(name.clone()) {
                Ok(owned) => owned,
                Err(e) => {
                    last_error = Some(e);
                    false
                }
            }
        });
        waited.map_err(|why| {
            anyhow::anyhow!(
                "{who}: the user's bus is up but its systemd manager ({SYSTEMD_NAME}) {}{}; {}",
                why.describe(Duration::ZERO),
                last_error
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default(),
                hint
            )
        })
    }

    /// The unit's object path and `LoadState`, the unit held (`Ref`) from
    /// then on until this connection closes: a unit read and then started
    /// or stopped is loaded from its file once, not again after systemd
    /// collected it in between. A refused hold leaves the read as it is.
    pub(super) fn load(&self, unit: &str) -> anyhow::Result<(OwnedObjectPath, String)> {
        let who = &self.who;
        let path = OwnedObjectPath::try_from(unit_object_path(unit))
            .with_context(|| format!("{who}: {unit} is not a unit name systemd could load"))?;
        let mut batch = Batch::default();
        batch.call(SYSTEMD_NAME, &path, UNIT_INTERFACE, "Ref", &())?;
        let state = batch.get(&path, UNIT_INTERFACE, "LoadState")?;
        let state = batch
            .send(&self.conn)
            .and_then(|mut replies| Ok(replies.value::<String>(state)?))
            .with_context(|| format!("{who}: cannot read the LoadState of {unit}"))?;
        Ok((path, state))
    }

    pub(super) fn unit(&self, path: &OwnedObjectPath) -> anyhow::Result<UnitProxy<'static>> {
        Ok(UnitProxy::builder(&self.conn)
            .path(path.clone())?
            .cache_properties(CacheProperties::No)
            .build()?)
    }

    /// The unit's proxy at its computed path (loaded on first use).
    pub(super) fn unit_by_name(&self, unit: &str) -> anyhow::Result<UnitProxy<'static>> {
        self.unit(&OwnedObjectPath::try_from(unit_object_path(unit))?)
    }

    pub(super) fn job(&self, path: &OwnedObjectPath) -> anyhow::Result<JobProxy<'static>> {
        Ok(JobProxy::builder(&self.conn)
            .path(path.clone())?
            .cache_properties(CacheProperties::No)
            .build()?)
    }

    /// The unit's state for the operator, its four properties read in one
    /// round trip; fields that cannot be read (a target has no `Result`)
    /// stay `None`.
    pub(super) fn status(&self, unit: &str) -> UnitStatus {
        let path = unit_object_path(unit);
        let read = || -> anyhow::Result<UnitStatus> {
            let mut batch = Batch::default();
            let active = batch.get(&path, UNIT_INTERFACE, "ActiveState")?;
            let sub = batch.get(&path, UNIT_INTERFACE, "SubState")?;
            let result = batch.get(&path, SERVICE_INTERFACE, "Result")?;
            let exec = batch.get(&path, SERVICE_INTERFACE, "ExecMainStatus")?;
            let mut replies = batch.send(&self.conn)?;
            Ok(UnitStatus {
                active_state: replies.value(active).ok(),
                sub_state: replies.value(sub).ok(),
                result: replies.value(result).ok(),
                exec_main_status: replies.value(exec).ok(),
            })
        };
        read().unwrap_or_default()
    }

    /// The service `Result` of the unit at `path`; `None` when it cannot be
    /// read (a unit that is not a service has none).
    pub(super) fn service_result(&self, path: &OwnedObjectPath) -> Option<String> {
        ServiceProxy::builder(&self.conn)
            .path(path.clone())
            .and_then(|b| b.cache_properties(CacheProperties::No).build())
            .ok()?
            .result()
            .ok()
    }

    /// Polls until the unit is `inactive` or `failed`, at most `limit`.
    pub(super) fn wait_settled(&self, unit: &str, limit: Duration) -> bool {
        wait_until(Deadline::after(limit), None, || {
            self.unit_by_name(unit)
                .and_then(|u| Ok(u.active_state()?))
                .is_ok_and(|state| is_settled(&state))
        })
        .is_ok()
    }

    /// `Subscribe`, match rules for `PropertiesChanged` of any unit and for
    /// `JobRemoved` (the three in one round trip), and a reader thread that
    /// sends `()` on each such signal: a wait for units to settle wakes on
    /// their changes.
    pub(super) fn watch_changes(&self) -> anyhow::Result<mpsc::Receiver<()>> {
        let who = &self.who;
        let context = || format!("{who}: cannot listen for unit changes in the user's systemd");
        let messages = MessageIterator::from(&self.conn);
        let rules = [
            MatchRule::builder()
                .msg_type(MessageType::Signal)
                .sender(SYSTEMD_NAME)?
                .interface("org.freedesktop.DBus.Properties")?
                .member("PropertiesChanged")?
                .path_namespace("/org/freedesktop/systemd1/unit")?
                .build(),
            MatchRule::builder()
                .msg_type(MessageType::Signal)
                .sender(SYSTEMD_NAME)?
                .path(MANAGER_PATH)?
                .interface(MANAGER_INTERFACE)?
                .member("JobRemoved")?
                .build(),
        ];
        let mut batch = Batch::default();
        let mut slots = vec![batch.manager("Subscribe", &())?];
        for rule in rules {
            slots.push(batch.bus("AddMatch", &(rule.to_string(),))?);
        }
        let mut replies = batch.send(&self.conn).with_context(context)?;
        for slot in slots {
            replies.take(slot).with_context(context)?;
        }
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("systemd-changes".into())
            .spawn(move || {
                for message in messages {
                    let Ok(message) = message else { break };
                    if message.message_type() == MessageType::Signal && tx.send(()).is_err() {
                        break;
                    }
                }
            })
            .with_context(context)?;
        Ok(rx)
    }

    /// Queues a job for `unit` (`method`: `StartUnit` or `StopUnit`, mode
    /// `replace`) with its end listened for: the manager's unique name, a
    /// match rule for `JobRemoved`, for a start a hold on the unit,
    /// `Subscribe` and the call itself go out in that order in one round
    /// trip (the bus applies the rule before it passes the call on, the
    /// manager subscribes us before it sees the call), and a reader thread
    /// forwards each `JobRemoved` to a channel,
    /// so waits can use `recv_timeout`. The outer error: no watch; the
    /// inner one: the manager refused the call.
    pub(super) fn queue_job(
        &self,
        method: &str,
        unit: &str,
    ) -> anyhow::Result<(JobWatch, zbus::Result<OwnedObjectPath>)> {
        let who = &self.who;
        let context = || format!("{who}: cannot listen for job signals of the user's systemd");
        // The stream exists before the rule, the rule before StartUnit: no
        // signal can slip past. Closing the connection ends the stream.
        let messages = MessageIterator::from(&self.conn);
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender(SYSTEMD_NAME)?
            .path(MANAGER_PATH)?
            .interface(MANAGER_INTERFACE)?
            .member("JobRemoved")?
            .build();
        let mut batch = Batch::default();
        // Only the manager itself may end our job (other processes of the
        // user share the bus).
        let owner = batch.bus("GetNameOwner", &(SYSTEMD_NAME,))?;
        let matched = batch.bus("AddMatch", &(rule.to_string(),))?;
        // A started unit stays loaded while we hold it: the status read
        // after its job sees how this run ended, not a fresh load of a
        // unit systemd already collected (a finished oneshot is collected
        // at once). Held already if this connection read its LoadState;
        // the hold ends with the connection. Without it (refused), the
        // read works as before.
        let held = (method == "StartUnit")
            .then(|| {
                batch.call(
                    SYSTEMD_NAME,
                    &unit_object_path(unit),
                    UNIT_INTERFACE,
                    "Ref",
                    &(),
                )
            })
            .transpose()?;
        // Subscribed after the hold: should the hold load the unit (a
        // connection that did not read its LoadState), that is not
        // broadcast as signals nobody reads (systemd sends them only while
        // someone subscribes).
        let subscribe = batch.manager("Subscribe", &())?;
        let queued = batch.manager(method, &(unit, "replace"))?;
        let mut replies = batch.send(&self.conn).with_context(context)?;
        replies.take(subscribe).with_context(context)?;
        replies.take(matched).with_context(context)?;
        if let Some(held) = held {
            let _ = replies.take(held);
        }
        let owner: String = replies
            .take(owner)
            .and_then(|reply| reply.body().deserialize::<String>())
            .with_context(context)?;
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("systemd-jobs".into())
            .spawn(move || {
                for message in messages {
                    let Ok(message) = message else { break };
                    let Some(removed) = job_removed(&message, &owner) else {
                        continue;
                    };
                    if tx.send(removed).is_err() {
                        break;
                    }
                }
            })
            .with_context(context)?;
        let job = replies
            .take(queued)
            .and_then(|reply| reply.body().deserialize::<OwnedObjectPath>());
        Ok((JobWatch { rx }, job))
    }
}
