//! Run memory (behaviour.md, "Run memory"): one run at a time per node (the
//! lock, waited for within the run deadline), the journal that lets a run
//! resume after a crash (what earlier runs left, and every change this run
//! makes), and delivering the terminal events an earlier run could not.

use std::cell::{Cell, RefCell};

use crate::model::journal::{
    ActionRecord, ActionState, Change, Delivery, EventOf, JobRecord, Posted, RunEnd, Target,
};
use crate::model::{Action, BackupPayload, FetchedIntent, JobId, NodeEvent, Op, Terminal};
use crate::ports::{Level, LockAttempt, LogFields, MessageId, Over, ProviderError};

use super::plan::{ActionPlan, Recalled};
use super::stop::Stop;
use super::{retry, Outcome, Ports, Settings};

fn log(settings: &Settings, ports: Ports<'_>, job: Option<&JobId>, level: Level, msg: &str) {
    let fields = LogFields {
        node: Some(settings.node.as_str()),
        job: job.map(JobId::as_str),
        ..LogFields::default()
    };
    ports.log.line(level, &fields, msg);
}

/// Takes the node's run lock, waiting (within the run deadline) while
/// another run holds it, and saying once who that is.
pub fn take_lock(settings: &Settings, ports: Ports<'_>) -> Result<(), Stop> {
    let mut announced = false;
    loop {
        let now = ports.clock.now();
        let holder = match ports.lock.try_lock(&settings.sha, now) {
            Ok(LockAttempt::Taken) => return Ok(()),
            Ok(LockAttempt::Busy(holder)) => holder,
            Err(e) => {
                return Err(Stop::Lock {
                    why: format!("{e:#}"),
                })
            }
        };
        let who = holder.to_string();
        if !announced {
            announced = true;
            log(
                settings,
                ports,
                None,
                Level::Warn,
                &format!(
                    "another run holds this node's run lock ({who}); waiting for it to finish"
                ),
            );
        }
        let pause =
            settings
                .deadline()
                .slice_at(ports.clock.instant(), Settings::LOCK_POLL, ports.cancel);
        match pause {
            Ok(pause) => ports.clock.sleep(pause),
            Err(Over::Stopped) => {
                return Err(Stop::Interrupted {
                    step: format!("waiting for the run lock ({who})"),
                })
            }
            Err(Over::Reached) => {
                return Err(Stop::Deadline {
                    reached: settings.deadline_reached(),
                    step: format!("waiting for the run lock held by another run ({who})"),
                })
            }
        }
    }
}

/// Whether this node's latest event on `job` is `event` already: the POST
/// went through but the run ended before the journal said so.
pub fn already_there(ports: Ports<'_>, job: &JobId, event: &NodeEvent) -> bool {
    matches!(ports.provider.own_status(job), Ok(Some(latest))
        if latest.phase == event.phase
            && latest.status == event.status
            && latest.message.as_deref() == Some(event.message.as_str()))
}

/// Delivers the terminal events earlier runs could not, for every job
/// that has some: 409 drops one (the job is closed), 403 ends the run,
/// other failures keep them for the next run.
pub fn deliver_pending(settings: &Settings, ports: Ports<'_>) -> Result<(), Stop> {
    ports.journal.prune(ports.clock.now());
    for mut record in ports.journal.with_pending() {
        let job = record.job.clone();
        for pending in record.pending() {
            let phase = pending.of.phase();
            let event = pending.terminal.event(&settings.node, phase);
            // The journal's own text: the log sink escapes it.
            let shown = format!(
                "({phase}, {}) \"{}\"",
                event.status, pending.terminal.message
            );
            if already_there(ports, &job, &event) {
                mark(
                    settings,
                    ports,
                    &mut record,
                    &pending.of,
                    Delivery::Delivered,
                );
                log(
                    settings,
                    ports,
                    Some(&job),
                    Level::Info,
                    &format!(
                        "the provider already has {shown}, left undelivered by an earlier run"
                    ),
                );
                continue;
            }
            let step = format!(
                "delivering {phase}/{} of job {job} left by an earlier run",
                event.status
            );
            // One attempt each: a provider that fails it now is asked again
            // by the next run, and this run's own work must not wait.
            match ports.provider.post_event(&job, &event) {
                Ok(()) => {
                    mark(
                        settings,
                        ports,
                        &mut record,
                        &pending.of,
                        Delivery::Delivered,
                    );
                    log(
                        settings,
                        ports,
                        Some(&job),
                        Level::Info,
                        &format!("delivered {shown}, left undelivered by an earlier run"),
                    );
                }
                Err(e @ ProviderError::JobClosed) => {
                    // The job is closed: it will never take the event. Only
                    // 409 drops one; a 404 or 400 may as well come from a
                    // wrong base URL, so those stay for a later run.
                    mark(settings, ports, &mut record, &pending.of, Delivery::Dropped);
                    log(
                        settings,
                        ports,
                        Some(&job),
                        Level::Warn,
                        &format!("dropping the undelivered event {shown} of job {job}: {e}"),
                    );
                }
                Err(ProviderError::Refused) => return Err(Stop::Refused { step }),
                Err(e) => {
                    let fields = LogFields {
                        node: Some(settings.node.as_str()),
                        job: Some(job.as_str()),
                        status: Some(event.status.as_str()),
                        message_id: Some(MessageId::EVENT_UNDELIVERED),
                        ..LogFields::default()
                    };
                    ports.log.line(
                        Level::Warn,
                        &fields,
                        &format!("cannot deliver {shown} ({e}); it stays in the journal for the next run"),
                    );
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// What earlier runs left for `fetched`: its journal record, when written
/// for this very intent (another one is reported and ignored), and the
/// backup payloads the provider already serves for this node's backups.
/// `published` asks the provider for one user's payload.
pub fn recall(
    settings: &Settings,
    fetched: &FetchedIntent,
    record: Option<JobRecord>,
    mut published: impl FnMut(&Action) -> Result<Option<BackupPayload>, ProviderError>,
) -> Result<(Recalled, Option<String>), ProviderError> {
    let mut note = None;
    let record = record.filter(|r| {
        let same = r.intent_digest == fetched.digest;
        if !same {
            note = Some(format!(
                "the journal of job {} was written for another intent ({}, now {}); ignoring it and starting afresh",
                fetched.job, r.intent_digest, fetched.digest
            ));
        }
        same
    });
    let mut memory = Recalled {
        record,
        ..Recalled::default()
    };
    if let Ok(intent) = &fetched.intent {
        for (index, action) in intent.actions.iter().enumerate() {
            if action.op != Op::Backup || action.migrations.is_empty() {
                continue;
            }
            if let Some(payload) = published(action)? {
                if payload.source_node == settings.node && payload.user == action.user {
                    memory.published.insert(index, payload);
                }
            }
        }
    }
    Ok((memory, note))
}

/// [`recall`] for the run: the journal through its port, the provider with
/// retries.
pub fn recall_for_run(
    settings: &Settings,
    ports: Ports<'_>,
    fetched: &FetchedIntent,
) -> Result<Recalled, Stop> {
    let step = "backup-snapshot of this node (resume)".to_owned();
    let (memory, note) = recall(
        settings,
        fetched,
        ports.journal.load(&fetched.job),
        |action| {
            retry::retrying(settings, ports, &step, || {
                ports
                    .provider
                    .backup_snapshot(&fetched.job, &settings.node, &action.user)
            })
        },
    )
    .map_err(|e| Stop::from_provider(Some(&fetched.job), step.clone(), e))?;
    if let Some(note) = note {
        log(settings, ports, Some(&fetched.job), Level::Warn, &note);
    }
    Ok(memory)
}

/// Records, in an earlier run's record, what delivering its event `of`
/// came to.
fn mark(
    settings: &Settings,
    ports: Ports<'_>,
    record: &mut JobRecord,
    of: &EventOf,
    delivery: Delivery,
) {
    let change = Change::Delivery {
        of: Target::from(of),
        delivery,
        touch: false,
    };
    record.apply(&change);
    if let Err(e) = ports.journal.append(&record.job, &change) {
        cannot_write(settings, ports, &record.job, &e);
    }
}

fn cannot_write(settings: &Settings, ports: Ports<'_>, job: &JobId, e: &anyhow::Error) {
    log(
        settings,
        ports,
        Some(job),
        Level::Error,
        &format!(
            "cannot write the journal ({e:#}); a run after a crash may not know what this one did"
        ),
    );
}

/// This run's changes to the job's record: the record written whole when
/// the run starts, each change in between appended at once, and compacted
/// when the run ends if it appended more than [`COMPACT_AFTER`] lines.
pub struct RunRecorder<'a> {
    settings: &'a Settings,
    ports: Ports<'a>,
    record: RefCell<JobRecord>,
    /// A change could not be written: the next one writes the record whole
    /// instead, so that none stays lost.
    behind: Cell<bool>,
    /// Lines appended since the record was last written whole.
    appended: Cell<usize>,
}

/// A run that appended more lines than this compacts the file when it ends.
pub const COMPACT_AFTER: usize = 32;

impl<'a> RunRecorder<'a> {
    /// The record of `fetched` (what `memory` recalled, or a new one) with
    /// this run added to it, written whole: every run starts from a
    /// compact file, whatever an earlier run's crash left at its end.
    pub fn open(
        settings: &'a Settings,
        ports: Ports<'a>,
        fetched: &FetchedIntent,
        memory: &Recalled,
    ) -> Self {
        let mut record = memory.record.clone().unwrap_or_else(|| {
            JobRecord::new(
                settings.node.clone(),
                fetched.job.clone(),
                settings.sha.clone(),
                fetched.digest.clone(),
            )
        });
        record.apply(&Change::Run {
            pid: settings.pid,
            started_at: ports.clock.now(),
            sha: settings.sha.clone(),
        });
        let memo = RunRecorder {
            settings,
            ports,
            record: RefCell::new(record),
            behind: Cell::new(false),
            appended: Cell::new(0),
        };
        memo.rewrite();
        memo
    }

    /// Writes the record whole; says whether that worked.
    fn rewrite(&self) -> bool {
        let record = self.record.borrow();
        let written = self.ports.journal.rewrite(&record);
        self.behind.set(written.is_err());
        self.appended.set(0);
        if let Err(e) = written {
            cannot_write(self.settings, self.ports, &record.job, &e);
        }
        !self.behind.get()
    }

    /// Applies `change` to the record and appends it to the journal (or
    /// writes the record whole, when an earlier change is missing there).
    fn change(&self, change: Change) {
        self.changes(vec![change]);
    }

    /// [`Self::change`] for several changes, in order, with one sync.
    fn changes(&self, changes: Vec<Change>) {
        {
            let mut record = self.record.borrow_mut();
            for change in &changes {
                record.apply(change);
            }
        }
        if self.behind.get() {
            self.rewrite();
            return;
        }
        let record = self.record.borrow();
        if let Err(e) = self.ports.journal.append_all(&record.job, &changes) {
            self.behind.set(true);
            cannot_write(self.settings, self.ports, &record.job, &e);
        }
        self.appended.set(self.appended.get() + changes.len());
    }

    fn started_at(&self, planned: &ActionPlan) -> jiff::Timestamp {
        let record = self.record.borrow();
        match record
            .action(planned.index, &planned.action)
            .map(|a| &a.state)
        {
            Some(
                ActionState::Started { started_at } | ActionState::Finished { started_at, .. },
            ) => *started_at,
            None => self.ports.clock.now(),
        }
    }

    /// The action starts (again).
    pub fn started(&self, planned: &ActionPlan) {
        let now = self.ports.clock.now();
        self.change(Change::Action(ActionRecord {
            index: planned.index,
            op: planned.action.op,
            user: planned.action.user.clone(),
            state: ActionState::Started { started_at: now },
        }));
    }

    /// The action has its terminal event.
    pub fn finished(
        &self,
        planned: &ActionPlan,
        terminal: &Terminal,
        adopted: bool,
        delivery: Delivery,
    ) {
        self.change(self.finish(planned, terminal, adopted, delivery));
    }

    /// The last action has its terminal event (to be posted), and the
    /// node's final event, to be posted after it, is `closing`: both are
    /// recorded with one sync. A crash before they are posted leaves both
    /// to deliver, in that order, as a crash between them would have.
    pub fn finished_closing(&self, planned: &ActionPlan, terminal: &Terminal, closing: &Terminal) {
        self.changes(vec![
            self.finish(planned, terminal, false, Delivery::Pending),
            Change::Closing(Posted {
                terminal: closing.clone(),
                delivery: Delivery::Pending,
            }),
        ]);
    }

    fn finish(
        &self,
        planned: &ActionPlan,
        terminal: &Terminal,
        adopted: bool,
        delivery: Delivery,
    ) -> Change {
        let started_at = self.started_at(planned);
        let now = self.ports.clock.now();
        Change::Action(ActionRecord {
            index: planned.index,
            op: planned.action.op,
            user: planned.action.user.clone(),
            state: ActionState::Finished {
                started_at,
                finished_at: now,
                adopted,
                event: Posted {
                    terminal: terminal.clone(),
                    delivery,
                },
            },
        })
    }

    /// The node's final (`intent`, ...) event is about to be posted (and
    /// recorded, unless [`Self::finished_closing`] recorded it already).
    pub fn closing(&self, terminal: &Terminal) {
        let posted = Posted {
            terminal: terminal.clone(),
            delivery: Delivery::Pending,
        };
        if self.record.borrow().closing.as_ref() == Some(&posted) {
            return;
        }
        self.change(Change::Closing(posted));
    }

    /// What posting the event `of` came to: delivered, dropped (the job is
    /// closed) or still pending.
    pub fn delivery(&self, of: &EventOf, posted: &Result<(), Stop>) {
        let delivery = match posted {
            Ok(()) => Delivery::Delivered,
            Err(Stop::JobClosed { .. }) => Delivery::Dropped,
            Err(_) => return,
        };
        self.change(Change::Delivery {
            of: Target::from(of),
            delivery,
            touch: true,
        });
    }

    /// The run ends with `outcome`. A run that appended more than
    /// [`COMPACT_AFTER`] lines writes the record, with that end, whole (the
    /// file compacted); a small one appends the end (the next run's start
    /// compacts it), as does one whose compaction failed.
    pub fn end(&self, outcome: &Outcome) {
        let end = Change::End(RunEnd {
            at: self.ports.clock.now(),
            success: outcome.is_success(),
            message: outcome.message().to_owned(),
        });
        if !self.behind.get() && self.appended.get() <= COMPACT_AFTER {
            self.change(end);
            return;
        }
        self.record.borrow_mut().apply(&end);
        let was_behind = self.behind.get();
        if !self.rewrite() && !was_behind {
            let record = self.record.borrow();
            if let Err(e) = self.ports.journal.append(&record.job, &end) {
                cannot_write(self.settings, self.ports, &record.job, &e);
            }
        }
    }
}

/// Which event of the job an action's terminal event is.
pub fn of_action(planned: &ActionPlan) -> EventOf {
    EventOf::Action {
        index: planned.index,
        op: planned.action.op,
        user: planned.action.user.clone(),
    }
}
