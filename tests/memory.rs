//! The run's memory against stubs and a fake clock (behaviour.md, "Run
//! memory"): resuming from the journal and the provider's record without
//! redoing finished work, delivering what earlier runs could not, the run
//! lock, the run deadline cutting every wait, and comin's real status.

#[path = "support/stubs.rs"]
mod stubs;

use std::time::Duration;

use hostenv_activate::engine::Outcome;
use hostenv_activate::model::journal::{
    ActionRecord, ActionState, Delivery, JobRecord, Posted, RunEnd,
};
use hostenv_activate::model::Phase::{self, Activate, Backup, Deactivate, Intent, Restore};
use hostenv_activate::model::Status::{self, Failed, Running, Success, TimedOut, Waiting};
use hostenv_activate::model::{
    BackupPayload, CominStatus, EventPayload, IntentDigest, JobId, NodeName, Op, Terminal,
};
use hostenv_activate::ports::{ProgramOutcome, ProgramRun, ProviderError};
use serde_json::{json, Value};
use stubs::*;

const UNIT: &str = "restic-backups-drupal-migrate.service";

fn seq(items: &[(Phase, Status)]) -> Vec<(Phase, Status)> {
    items.to_vec()
}

/// node-a's side of a migration: backup, then deactivate.
fn migration_away() -> Value {
    intent(json!([
        {"op": "backup", "user": "acme", "fromNode": "node-a", "toNode": "node-b", "migrations": ["drupal-migrate"]},
        {"op": "deactivate", "user": "acme", "fromNode": "node-a", "toNode": "node-b"}
    ]))
}

/// A world where node-a's migration away goes well: the unit is loaded,
/// restic shows a fresh snapshot, node-b has activated.
fn migration_world(provider: StubProvider) -> World {
    let mut w = World::new(provider.statuses(vec![Ok(vec![status(
        "node-b",
        Phase::Activate,
        Status::Success,
    )])]));
    w.systemd = StubSystemd::default().loaded(UNIT, unit_ok());
    w.programs = StubPrograms::default().answer(
        "restic-drupal-migrate",
        vec![exited(
            0,
            &snapshots_json(&[("2026-11-22T10:00:05Z", &restic_id("second-snapshot"))]),
        )],
    );
    w
}

fn first_payload() -> BackupPayload {
    backup_payload("acme", NODE, &[("drupal-migrate", "first-snapshot")])
}

fn backup_success() -> Terminal {
    Terminal::success(
        "Migration backups completed for acme",
        Some(EventPayload::Backup(first_payload())),
    )
}

/// Action 0, acme's activation, as an earlier run finished it.
fn activated(delivery: Delivery) -> ActionRecord {
    finished(
        0,
        Op::Activate,
        Terminal::success("Activation completed for acme", None),
        delivery,
    )
}

/// [`migration_world`] where an earlier run of [`migration_away`] finished
/// the backup, its event `delivery`.
fn backed_up_earlier(provider: StubProvider, delivery: Delivery) -> World {
    let w = migration_world(provider);
    w.journal.put(earlier_record(
        &migration_away(),
        [finished(0, Op::Backup, backup_success(), delivery)],
    ));
    w
}

fn journal_state(w: &World, index: usize) -> ActionState {
    w.journal
        .record(JOB)
        .expect("a record")
        .actions
        .into_iter()
        .find(|a| a.index == index)
        .expect("the action")
        .state
}

fn delivery(state: &ActionState) -> Option<Delivery> {
    match state {
        ActionState::Finished { event, .. } => Some(event.delivery),
        ActionState::Started { .. } => None,
    }
}

// ------------------------------------------------------------ the journal

#[test]
fn a_run_journals_every_action_and_its_delivery() {
    let w = migration_world(StubProvider::with_intent(migration_away()));
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    let record = w.journal.record(JOB).expect("a record");
    assert_eq!(record.intent_digest, IntentDigest::of(&migration_away()));
    assert_eq!(record.sha, "abc");
    assert_eq!(record.actions.len(), 2);
    for a in &record.actions {
        let ActionState::Finished { event, adopted, .. } = &a.state else {
            panic!("{a:?}");
        };
        assert_eq!(event.delivery, Delivery::Delivered, "{a:?}");
        assert!(!adopted);
    }
    let ActionState::Finished { event, .. } = &record.actions[0].state else {
        panic!("finished");
    };
    assert_eq!(
        event.terminal.payload,
        Some(EventPayload::Backup(backup_payload(
            "acme",
            NODE,
            &[("drupal-migrate", &restic_id("second-snapshot"))]
        )))
    );
    assert_eq!(
        record.closing.map(|c| c.delivery),
        Some(Delivery::Delivered)
    );
    assert_eq!(record.runs.len(), 1);
    assert_eq!(record.runs[0].pid, 777);
    assert!(matches!(
        &record.runs[0].ended,
        Some(RunEnd { success: true, .. })
    ));
    // Every change is saved: the record whole when the run starts, each
    // start/end/delivery, the closing event and its delivery, and the run's
    // end appended (a run this small is not compacted when it ends). The
    // last action's end and the closing event go in one save.
    assert_eq!(w.journal.rewrites.get(), 1);
    assert_eq!(w.journal.saves.get(), 1 + 2 * 3 + 1 + 1);
}

#[test]
fn a_change_the_journal_could_not_take_is_written_with_the_next_one() {
    let w = migration_world(StubProvider::with_intent(migration_away()));
    // The backup's start cannot be appended; its end then goes with the
    // whole record, and the run goes on appending.
    w.journal.fail_appends.set(1);
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(
        w.logged("cannot write the journal (disk full for a moment)")
            .len(),
        1
    );
    assert_eq!(w.journal.rewrites.get(), 2);
    let record = w.journal.record(JOB).expect("a record");
    assert_eq!(record.actions.len(), 2);
    assert!(record.pending().is_empty());
    assert_eq!(record.runs[0].touched, vec![0, 1]);
}

#[test]
fn a_journal_that_cannot_be_written_does_not_stop_the_run() {
    let w = migration_world(StubProvider::with_intent(migration_away()));
    w.journal.fail_saves.set(true);
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert!(!w.logged("cannot write the journal (disk full)").is_empty());
}

// ------------------------------------------------------------ resume

#[test]
fn finished_and_delivered_actions_are_skipped_and_nothing_is_posted_again() {
    let w = backed_up_earlier(
        StubProvider::with_intent(migration_away()),
        Delivery::Delivered,
    );
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert!(
        w.systemd.started.borrow().is_empty(),
        "the unit did not run again"
    );
    assert_eq!(
        w.provider.sequence(),
        seq(&[
            (Deactivate, Waiting),
            (Deactivate, Running),
            (Deactivate, Success),
            (Intent, Success)
        ])
    );
    assert!(!w.logged("already done").is_empty());
}

#[test]
fn a_finished_action_whose_event_was_not_delivered_posts_the_same_event_again() {
    let w = backed_up_earlier(
        StubProvider::with_intent(migration_away()),
        Delivery::Pending,
    );
    // The provider saw only the backup's `running`.
    *w.provider.own.borrow_mut() = Some(Ok(Some(status(NODE, Backup, Running))));
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert!(w.systemd.started.borrow().is_empty());
    let posted = w.provider.posted.borrow().clone();
    assert_eq!(
        (posted[0].phase, posted[0].status),
        (Backup, Success),
        "{posted:#?}"
    );
    assert_eq!(posted[0].message, "Migration backups completed for acme");
    assert_eq!(
        posted[0].payload,
        Some(EventPayload::Backup(first_payload())),
        "the same payload: the restoring node sees the first snapshot"
    );
    assert_eq!(
        w.provider.sequence()[1..],
        seq(&[
            (Deactivate, Waiting),
            (Deactivate, Running),
            (Deactivate, Success),
            (Intent, Success)
        ])
    );
    assert_eq!(delivery(&journal_state(&w, 0)), Some(Delivery::Delivered));
}

#[test]
fn an_event_the_provider_already_has_is_not_posted_twice() {
    // The run was killed after the POST went through, before the journal
    // said so: the provider's latest event of this node is that event.
    let w = backed_up_earlier(
        StubProvider::with_intent(migration_away()),
        Delivery::Pending,
    );
    let mut latest = status(NODE, Backup, Success);
    latest.message = Some("Migration backups completed for acme".into());
    *w.provider.own.borrow_mut() = Some(Ok(Some(latest)));
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(w.provider.sequence()[0], (Deactivate, Waiting));
    assert_eq!(delivery(&journal_state(&w, 0)), Some(Delivery::Delivered));
}

#[test]
fn a_backup_the_provider_already_serves_is_adopted_without_a_journal() {
    let w = migration_world(
        StubProvider::with_intent(migration_away()).backups(vec![Ok(Some(first_payload()))]),
    );
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert!(w.systemd.started.borrow().is_empty(), "no unit started");
    assert!(w.programs.ran.borrow().is_empty(), "restic not asked");
    assert_eq!(
        w.provider.sequence(),
        seq(&[
            (Deactivate, Waiting),
            (Deactivate, Running),
            (Deactivate, Success),
            (Intent, Success)
        ]),
        "nothing about the backup is announced again; the next action runs once"
    );
    assert_eq!(w.systemd.reloads.get(), 1);
    assert_eq!(
        w.provider.backup_calls.borrow().as_slice(),
        [(NODE.to_owned(), "acme".to_owned())],
        "asked for this node's own backup of acme"
    );
    let ActionState::Finished { adopted, event, .. } = journal_state(&w, 0) else {
        panic!("finished");
    };
    assert!(adopted);
    assert_eq!(event.delivery, Delivery::Delivered);
    assert_eq!(event.terminal, backup_success());
}

#[test]
fn a_payload_that_lacks_a_key_is_not_adopted() {
    let w = migration_world(
        StubProvider::with_intent(migration_away()).backups(vec![Ok(Some(backup_payload(
            "acme",
            NODE,
            &[("other-migrate", "x")],
        )))]),
    );
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(w.systemd.started.borrow().len(), 1, "the backup ran");
}

#[test]
fn started_but_unfinished_actions_run_again() {
    let intent_json = intent(json!([
        {"op": "activate", "user": "acme"},
        {"op": "reload", "user": "acme"}
    ]));
    let w = World::new(StubProvider::with_intent(intent_json.clone()));
    w.journal.put(earlier_record(
        &intent_json,
        [activated(Delivery::Delivered), started(1, Op::Reload)],
    ));
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(w.programs.ran_names(), ["activate"], "only the reload ran");
    assert_eq!(
        w.provider.sequence(),
        seq(&[
            (Phase::Reload, Running),
            (Phase::Reload, Success),
            (Intent, Success)
        ])
    );
    assert!(!w.logged("did not finish: it runs again").is_empty());
}

#[test]
fn a_started_backup_runs_again_only_when_the_provider_has_no_payload() {
    // No payload: the backup runs again.
    let w = migration_world(StubProvider::with_intent(migration_away()));
    let r = earlier_record(&migration_away(), [started(0, Op::Backup)]);
    w.journal.put(r.clone());
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(w.systemd.started.borrow().len(), 1);
    // A payload: adopted, the unit is not started again.
    let w = migration_world(
        StubProvider::with_intent(migration_away()).backups(vec![Ok(Some(first_payload()))]),
    );
    w.journal.put(r);
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert!(w.systemd.started.borrow().is_empty());
    assert_eq!(w.provider.sequence()[0], (Deactivate, Waiting));
}

#[test]
fn a_journal_written_for_another_intent_is_ignored_and_replaced() {
    let w = migration_world(StubProvider::with_intent(migration_away()));
    let other = intent(json!([{"op": "backup", "user": "acme", "migrations": ["drupal-migrate"]}]));
    w.journal.put(earlier_record(
        &other,
        [finished(
            0,
            Op::Backup,
            backup_success(),
            Delivery::Delivered,
        )],
    ));
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(w.systemd.started.borrow().len(), 1, "the backup ran");
    assert_eq!(w.provider.sequence()[0], (Backup, Running));
    assert!(!w.logged("written for another intent").is_empty());
    let record = w.journal.record(JOB).expect("replaced");
    assert_eq!(record.intent_digest, IntentDigest::of(&migration_away()));
    assert_eq!(record.runs.len(), 1, "a fresh record");
}

#[test]
fn an_action_that_failed_earlier_is_not_run_again_and_fails_the_run() {
    let intent_json = intent(json!([
        {"op": "activate", "user": "acme"},
        {"op": "activate", "user": "other"}
    ]));
    let w = World::new(StubProvider::with_intent(intent_json.clone()));
    w.journal.put(earlier_record(
        &intent_json,
        [finished(
            0,
            Op::Activate,
            Terminal::failed("Activation failed for acme (exit code 3): boom", None),
            Delivery::Delivered,
        )],
    ));
    let out = w.run();
    assert!(
        matches!(&out, Outcome::Failed(m) if m.contains("in an earlier run")),
        "{out:?}"
    );
    assert!(w.provider.posted.borrow().is_empty());
    assert!(w.programs.ran.borrow().is_empty());
}

#[test]
fn a_job_this_node_finished_posts_nothing() {
    let intent_json = intent(json!([{"op": "activate", "user": "acme"}]));
    let w = World::new(StubProvider::with_intent(intent_json.clone()));
    let mut r = earlier_record(&intent_json, [activated(Delivery::Delivered)]);
    r.closing = Some(Posted {
        terminal: Terminal::success("Completed all deploy actions for node node-a", None),
        delivery: Delivery::Delivered,
    });
    w.journal.put(r);
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert!(w.provider.posted.borrow().is_empty());
    assert!(w.programs.ran.borrow().is_empty());
}

// ------------------------------------------------------------ undelivered events

/// A record of job `job` whose backup success was never delivered.
fn pending_elsewhere(job: &str) -> JobRecord {
    let mut r = JobRecord::new(
        NodeName::parse(NODE).expect("node"),
        JobId::new(job),
        "old-sha".into(),
        IntentDigest::of(&json!({"old": true})),
    );
    r.begin_run(1, ts("2026-11-21T09:00:00Z"));
    r.put(finished(0, Op::Backup, backup_success(), Delivery::Pending));
    r
}

#[test]
fn every_run_first_delivers_what_earlier_runs_could_not() {
    let w = World::new(StubProvider::with_intent(intent(json!([]))));
    *w.provider.own.borrow_mut() = Some(Ok(None));
    w.journal.put(pending_elsewhere("job-0"));
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    let elsewhere = w.provider.posted_elsewhere.borrow().clone();
    assert_eq!(elsewhere.len(), 1);
    assert_eq!(elsewhere[0].0, "job-0");
    assert_eq!(
        (elsewhere[0].1.phase, elsewhere[0].1.status),
        (Backup, Success)
    );
    assert_eq!(
        elsewhere[0].1.payload,
        Some(EventPayload::Backup(first_payload()))
    );
    assert!(w
        .journal
        .record("job-0")
        .expect("kept")
        .pending()
        .is_empty());
    assert!(!w.logged("delivered (backup, success)").is_empty());
}

#[test]
fn an_undelivered_event_of_a_closed_job_is_dropped_with_a_line() {
    let w = World::new(
        StubProvider::with_intent(intent(json!([]))).fail_post(0, ProviderError::JobClosed),
    );
    *w.provider.own.borrow_mut() = Some(Ok(None));
    w.journal.put(pending_elsewhere("job-0"));
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert!(w
        .journal
        .record("job-0")
        .expect("kept")
        .pending()
        .is_empty());
    let lines = w.logged("dropping the undelivered event (backup, success)");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("of job job-0") && lines[0].contains("(409)"),
        "{lines:?}"
    );
    assert_eq!(w.provider.sequence(), seq(&[(Intent, Success)]));
}

#[test]
fn the_closing_event_recorded_with_the_last_action_is_dropped_with_it_when_the_job_closed() {
    // 0: activate running, 1: its success -> 409.
    let w = World::new(
        StubProvider::with_intent(intent(json!([{"op": "activate", "user": "acme"}])))
            .fail_post(1, ProviderError::JobClosed),
    );
    assert!(matches!(w.run(), Outcome::Failed(_)));
    let record = w.journal.record(JOB).expect("a record");
    assert_eq!(
        record
            .closing
            .as_ref()
            .map(|c| (c.terminal.is_success(), c.delivery)),
        Some((true, Delivery::Dropped)),
        "decided with the last action's success, and closed with the job"
    );
    assert!(record.pending().is_empty(), "nothing left for a later run");
    assert_eq!(w.provider.sequence(), seq(&[(Activate, Running)]));
}

#[test]
fn an_undelivered_event_answered_404_is_kept_a_wrong_base_url_must_not_lose_it() {
    let w = World::new(StubProvider::with_intent(intent(json!([]))).fail_post(
        0,
        ProviderError::NotFound("event post (empty answer)".into()),
    ));
    *w.provider.own.borrow_mut() = Some(Ok(None));
    w.journal.put(pending_elsewhere("job-0"));
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(w.journal.record("job-0").expect("kept").pending().len(), 1);
    assert!(!w.logged("stays in the journal for the next run").is_empty());
}

#[test]
fn an_event_that_still_cannot_be_delivered_stays_for_the_next_run() {
    let mut w = World::new(StubProvider::with_intent(intent(json!([]))));
    w.settings.retry.budget = Duration::ZERO;
    *w.provider.own.borrow_mut() = Some(Ok(None));
    w.provider
        .post_answers
        .borrow_mut()
        .insert(0, ProviderError::Transport("connection refused".into()));
    w.journal.put(pending_elsewhere("job-0"));
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(w.journal.record("job-0").expect("kept").pending().len(), 1);
    assert!(!w.logged("stays in the journal for the next run").is_empty());
}

#[test]
fn a_terminal_event_that_cannot_be_delivered_stays_pending() {
    let mut w = World::new(StubProvider::with_intent(intent(
        json!([{"op": "activate", "user": "acme"}]),
    )));
    w.settings.retry.budget = Duration::ZERO;
    // The second POST (activate success) fails.
    w.provider
        .post_answers
        .borrow_mut()
        .insert(1, ProviderError::Transport("connection reset".into()));
    assert!(matches!(w.run(), Outcome::Failed(_)));
    assert_eq!(delivery(&journal_state(&w, 0)), Some(Delivery::Pending));
    // The closing event its success decided waits behind it.
    let record = w.journal.record(JOB).expect("a record");
    assert_eq!(
        record
            .pending()
            .iter()
            .map(|p| p.of.phase())
            .collect::<Vec<_>>(),
        [Activate, Intent]
    );
    // The next run delivers them first, in that order, and posts nothing
    // twice.
    *w.provider.own.borrow_mut() = Some(Ok(Some(status(NODE, Activate, Running))));
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Activate, Running), (Activate, Success), (Intent, Success)])
    );
    assert_eq!(w.programs.ran_names(), ["activate"], "activate ran once");
}

#[test]
fn an_action_cut_short_stays_started_in_the_journal() {
    // The provider fails the action's first POST and the failure after it:
    // the run stops mid-action. The journal must say the action started, so
    // the next run runs it again (and `status` shows it unfinished).
    let mut w = World::new(StubProvider::with_intent(intent(
        json!([{"op": "activate", "user": "acme"}]),
    )));
    w.settings.retry.budget = Duration::ZERO;
    for attempt in [0, 1] {
        w.provider
            .post_answers
            .borrow_mut()
            .insert(attempt, ProviderError::Transport("connection reset".into()));
    }
    assert!(matches!(w.run(), Outcome::Failed(_)));
    assert!(
        matches!(journal_state(&w, 0), ActionState::Started { .. }),
        "{:?}",
        journal_state(&w, 0)
    );
}

#[test]
fn a_terminal_event_of_a_closed_job_is_dropped_not_kept() {
    let mut w = World::new(StubProvider::with_intent(intent(
        json!([{"op": "activate", "user": "acme"}]),
    )));
    w.settings.retry.budget = Duration::ZERO;
    // The activate's success answers 409: the job is closed.
    w.provider
        .post_answers
        .borrow_mut()
        .insert(1, ProviderError::JobClosed);
    assert!(matches!(w.run(), Outcome::Failed(_)));
    assert_eq!(delivery(&journal_state(&w, 0)), Some(Delivery::Dropped));
    assert!(
        hostenv_activate::ports::Journal::with_pending(&w.journal).is_empty(),
        "nothing is left for a later run to post to a closed job"
    );
}

#[test]
fn a_backup_unit_gets_the_runs_time_left_not_a_whole_action_timeout() {
    let mut w = migration_world(StubProvider::with_intent(migration_away()));
    short_deadline(&mut w, 20);
    assert!(matches!(
        w.run(),
        Outcome::Succeeded(_) | Outcome::Failed(_)
    ));
    let started = w.systemd.started.borrow().clone();
    assert_eq!(
        started
            .first()
            .map(|(unit, timeout)| (unit.as_str(), *timeout)),
        Some((UNIT, Duration::from_secs(20))),
        "the unit was bounded by the 20 s left, not the 900 s action timeout"
    );
}

// ------------------------------------------------------------ the lock

#[test]
fn a_second_run_waits_for_the_lock_and_says_once_who_holds_it() {
    let mut w = World::new(StubProvider::with_intent(intent(json!([
        {"op": "activate", "user": "acme"}
    ]))));
    w.lock_busy_until = Some(ts("2026-11-22T10:00:10Z"));
    let lock = w.lock();
    assert!(matches!(w.run_with(&lock), Outcome::Succeeded(_)));
    assert_eq!(lock.taken_at.get(), Some(ts("2026-11-22T10:00:10Z")));
    assert!(lock.attempts.get() > 2);
    let lines = w.logged("holds this node's run lock");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("pid 4242") && lines[0].contains("since 2026-11-22T09:59:00Z"),
        "{lines:?}"
    );
    assert_eq!(
        w.provider.intent_calls.get(),
        1,
        "the intent is fetched after the lock"
    );
}

// ------------------------------------------------------------ the deadline

fn short_deadline(w: &mut World, seconds: u64) {
    w.settings.run_timeout = Duration::from_secs(seconds);
}

#[test]
fn the_deadline_cuts_the_wait_for_the_lock() {
    let mut w = World::new(StubProvider::with_intent(intent(json!([]))));
    short_deadline(&mut w, 60);
    w.lock_busy_until = Some(ts("2026-11-22T11:00:00Z"));
    let out = w.run();
    let Outcome::Failed(msg) = &out else {
        panic!("{out:?}");
    };
    assert!(
        msg.starts_with("run deadline of 60 s reached at step waiting for the run lock"),
        "{msg}"
    );
    assert!(msg.contains("pid 4242"), "{msg}");
    assert_eq!(w.clock.slept.get(), Duration::from_secs(60));
    assert_eq!(w.provider.intent_calls.get(), 0);
}

#[test]
fn the_deadline_cuts_the_wait_for_an_intent() {
    let mut w = World::new(StubProvider::answering(vec![Ok(None)]));
    w.settings.intent_wait = Duration::from_secs(600);
    short_deadline(&mut w, 60);
    let out = w.run();
    assert!(
        matches!(&out, Outcome::Failed(m) if m.starts_with("run deadline of 60 s reached at step intent lookup")),
        "{out:?}"
    );
    assert_eq!(w.clock.slept.get(), Duration::from_secs(60));
}

#[test]
fn the_deadline_cuts_the_wait_for_another_node() {
    // restore waits for node-b's backup that never comes.
    let mut w = World::new(StubProvider::with_intent(intent(json!([
        {"op": "restore", "user": "acme", "fromNode": "node-b", "migrations": ["drupal-migrate"]}
    ]))));
    short_deadline(&mut w, 60);
    assert!(matches!(w.run(), Outcome::Failed(_)));
    let last_action = w.provider.posted.borrow()[1].clone();
    assert_eq!((last_action.phase, last_action.status), (Restore, TimedOut));
    assert!(
        last_action.message.starts_with(
            "run deadline of 60 s reached while waiting for the backup of acme on node-b"
        ),
        "{}",
        last_action.message
    );
    assert!(w.clock.slept.get() <= Duration::from_secs(60));
    // deactivate waits for node-b to activate, which it never does.
    let mut w = World::new(
        StubProvider::with_intent(intent(json!([
            {"op": "deactivate", "user": "acme", "toNode": "node-b"}
        ])))
        .statuses(vec![Ok(vec![status("node-b", Restore, Running)])]),
    );
    short_deadline(&mut w, 30);
    assert!(matches!(w.run(), Outcome::Failed(_)));
    let last = w.provider.last();
    assert_eq!((last.phase, last.status), (Deactivate, TimedOut));
    assert!(
        last.message
            .starts_with("run deadline of 30 s reached while waiting for node-b"),
        "{}",
        last.message
    );
    assert_eq!(w.systemd.stopped.borrow().len(), 0, "the site stays up");
}

#[test]
fn the_deadline_ends_a_running_program_as_its_own_timeout_would() {
    let mut w = World::new(StubProvider::with_intent(intent(json!([
        {"op": "activate", "user": "acme"}
    ]))));
    short_deadline(&mut w, 20);
    w.programs = StubPrograms::default().answer(
        "activate",
        vec![ProgramRun {
            outcome: ProgramOutcome::TimedOut,
            output: "still working".into(),
        }],
    );
    assert!(matches!(w.run(), Outcome::Failed(_)));
    let ran = w.programs.ran.borrow().clone();
    assert_eq!(
        ran[0].2,
        Duration::from_secs(20),
        "the program got the run's time left, not 900 s"
    );
    let last = w.provider.last();
    assert_eq!((last.phase, last.status), (Activate, TimedOut));
    assert!(
        last.message
            .starts_with("run deadline of 20 s reached while running"),
        "{}",
        last.message
    );
}

#[test]
fn the_deadline_passed_between_actions_runs_nothing_more() {
    let mut w = World::new(StubProvider::with_intent(intent(json!([
        {"op": "activate", "user": "acme"},
        {"op": "activate", "user": "other"}
    ]))));
    short_deadline(&mut w, 60);
    // The first activate takes the whole minute.
    w.systemd.on_start_advance.set(Duration::ZERO);
    w.clock.advance(Duration::from_secs(61));
    let out = w.run();
    assert!(matches!(out, Outcome::Failed(_)), "{out:?}");
    assert!(w.programs.ran.borrow().is_empty());
    let last = w.provider.last();
    assert_eq!((last.phase, last.status), (Intent, TimedOut));
    assert!(
        last.message
            .starts_with("run deadline of 60 s reached before action 1 of 2"),
        "{}",
        last.message
    );
}

#[test]
fn retries_stop_at_the_deadline() {
    let mut w = World::new(StubProvider::answering(vec![Err(ProviderError::Server {
        status: 503,
        body: "down".into(),
    })]));
    short_deadline(&mut w, 5);
    assert!(matches!(w.run(), Outcome::Failed(_)));
    assert!(
        w.clock.slept.get() <= Duration::from_secs(5),
        "{:?}",
        w.clock.slept.get()
    );
}

// ------------------------------------------------------------ comin's status

#[test]
fn an_error_message_with_status_done_means_the_switch_failed() {
    let mut w = World::new(StubProvider::with_intent(intent(json!([
        {"op": "activate", "user": "acme"}
    ]))));
    w.settings.comin = CominStatus::from_comin(
        Some("done"),
        Some("error: switch-to-configuration exited with status 4"),
    )
    .expect("valid");
    assert!(matches!(w.run(), Outcome::Failed(_)));
    assert_eq!(w.provider.sequence(), seq(&[(Intent, Failed)]));
    assert!(w.provider.messages()[0].contains("switch-to-configuration exited with status 4"));
    assert!(w.programs.ran.borrow().is_empty());
}

// ------------------------------------------------------------ message ids

#[test]
fn the_lines_an_operator_searches_for_carry_their_message_ids() {
    use hostenv_activate::ports::MessageId;
    let mut w = migration_world(StubProvider::with_intent(migration_away()));
    w.settings.retry.budget = Duration::ZERO;
    // The deactivate's terminal event is not delivered.
    w.provider
        .post_answers
        .borrow_mut()
        .insert(4, ProviderError::Transport("connection reset".into()));
    assert!(matches!(w.run(), Outcome::Failed(_)));
    let with = |id: MessageId| w.logged(&format!("id={}", id.0));
    assert_eq!(with(MessageId::RUN_STARTED).len(), 1);
    let finished = with(MessageId::RUN_FINISHED);
    assert_eq!(finished.len(), 1);
    assert!(
        finished[0].starts_with("Error") && finished[0].contains("status=Some(\"failed\")"),
        "{finished:?}"
    );
    let actions = with(MessageId::ACTION_FINISHED);
    assert_eq!(
        actions.len(),
        1,
        "the backup's; the deactivate's was not delivered: {actions:?}"
    );
    assert!(actions[0].contains("op=Some(\"backup\")"), "{actions:?}");
    let undelivered = with(MessageId::EVENT_UNDELIVERED);
    assert_eq!(undelivered.len(), 1, "{undelivered:?}");
    assert!(
        undelivered[0].contains("op=Some(\"deactivate\")"),
        "{undelivered:?}"
    );
}

#[test]
fn a_pending_backup_the_provider_already_serves_is_adopted_not_posted_again() {
    // The earlier run's POST went through, then it died before the journal
    // said so; this run's replay of it fails (502), but the provider serves
    // the payload: posting it again would move another backup's row.
    let w = backed_up_earlier(
        StubProvider::with_intent(migration_away())
            .backups(vec![Ok(Some(first_payload()))])
            .fail_post(
                0,
                ProviderError::Server {
                    status: 502,
                    body: "bad gateway".into(),
                },
            ),
        Delivery::Pending,
    );
    *w.provider.own.borrow_mut() = Some(Ok(Some(status(NODE, Backup, Running))));
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert!(
        !w.provider.sequence().contains(&(Backup, Success)),
        "{:?}",
        w.provider.sequence()
    );
    assert!(w.systemd.started.borrow().is_empty());
    let ActionState::Finished { adopted, event, .. } = journal_state(&w, 0) else {
        panic!("finished");
    };
    assert!(adopted);
    assert_eq!(event.delivery, Delivery::Delivered);
}

#[test]
fn a_redelivery_the_provider_already_has_is_not_posted_even_when_the_replay_stopped_early() {
    let intent_json = intent(json!([
        {"op": "activate", "user": "acme"},
        {"op": "reload", "user": "acme"}
    ]));
    let w = World::new(StubProvider::with_intent(intent_json.clone()).fail_post(
        0,
        ProviderError::Server {
            status: 502,
            body: "bad gateway".into(),
        },
    ));
    // Another job's pending event fails first, so the replay stops before
    // this job's; the provider's latest event of this node already is it.
    w.journal.put(pending_elsewhere("job-0"));
    w.journal
        .put(earlier_record(&intent_json, [activated(Delivery::Pending)]));
    let mut latest = status(NODE, Activate, Success);
    latest.message = Some("Activation completed for acme".into());
    *w.provider.own.borrow_mut() = Some(Ok(Some(latest)));
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(
        w.provider.sequence(),
        seq(&[
            (Phase::Reload, Running),
            (Phase::Reload, Success),
            (Intent, Success)
        ])
    );
    assert_eq!(delivery(&journal_state(&w, 0)), Some(Delivery::Delivered));
}

#[test]
fn nothing_is_started_once_the_deadline_has_passed() {
    // node-b activates exactly at the deadline: the deactivate goes on, but
    // stopping the site would begin past it.
    let mut answers = vec![Ok(vec![status("node-b", Restore, Running)]); 10];
    answers.push(Ok(vec![status("node-b", Activate, Success)]));
    let mut w = World::new(
        StubProvider::with_intent(intent(json!([
            {"op": "deactivate", "user": "acme", "toNode": "node-b"}
        ])))
        .statuses(answers),
    );
    short_deadline(&mut w, 10);
    assert!(matches!(w.run(), Outcome::Failed(_)));
    assert!(w.systemd.stopped.borrow().is_empty(), "nothing was stopped");
    let last = w.provider.last();
    assert_eq!((last.phase, last.status), (Deactivate, TimedOut));
    assert!(
        last.message.starts_with(
            "run deadline of 10 s reached while about to stop hostenv.target for acme"
        ),
        "{}",
        last.message
    );
    // An activate likewise never starts without time left.
    let mut w = World::new(StubProvider::with_intent(intent(json!([
        {"op": "restore", "user": "acme", "fromNode": "node-b", "migrations": ["drupal-migrate"]}
    ])))
    .backups(
        std::iter::repeat_with(|| Ok(None))
            .take(10)
            .chain([Ok(Some(backup_payload("acme", "node-b", &[("drupal-migrate", "id")])))])
            .collect(),
    ));
    short_deadline(&mut w, 10);
    assert!(matches!(w.run(), Outcome::Failed(_)));
    assert!(w.programs.ran.borrow().is_empty(), "activate never started");
    let last = w.provider.last();
    assert_eq!((last.phase, last.status), (Restore, TimedOut));
}

// ------------------------------------------------------------ a crash at any record

/// The real journal on disk, keeping a copy of its file after every write
/// and how many events the provider had by then.
struct Recording<'a> {
    inner: hostenv_activate::adapters::journal::FileJournal,
    path: std::path::PathBuf,
    provider: &'a StubProvider,
    points: std::cell::RefCell<Vec<(usize, Vec<u8>)>>,
}

impl Recording<'_> {
    fn keep(&self, written: anyhow::Result<()>) -> anyhow::Result<()> {
        let bytes = std::fs::read(&self.path).expect("the journal file");
        let posted = self.provider.posted.borrow().len();
        self.points.borrow_mut().push((posted, bytes));
        written
    }
}

impl hostenv_activate::ports::Journal for Recording<'_> {
    fn load(&self, job: &JobId) -> Option<JobRecord> {
        self.inner.load(job)
    }
    fn rewrite(&self, record: &JobRecord) -> anyhow::Result<()> {
        self.keep(self.inner.rewrite(record))
    }
    fn append_all(
        &self,
        job: &JobId,
        changes: &[hostenv_activate::model::journal::Change],
    ) -> anyhow::Result<()> {
        self.keep(self.inner.append_all(job, changes))
    }
    fn with_pending(&self) -> Vec<JobRecord> {
        self.inner.with_pending()
    }
    fn prune(&self, now: jiff::Timestamp) {
        self.inner.prune(now)
    }
}

fn three_activations() -> Value {
    intent(json!([
        {"op": "activate", "user": "acme"},
        {"op": "reload", "user": "acme"},
        {"op": "activate", "user": "acme"}
    ]))
}

/// A run on the real journal, where `ports.journal` is `journal`.
fn run_on(w: &World, journal: &dyn hostenv_activate::ports::Journal) -> Outcome {
    let lock = w.lock();
    let ports = hostenv_activate::ports::Ports {
        journal,
        ..w.ports(&lock)
    };
    hostenv_activate::engine::run(&w.settings, ports)
}

#[test]
fn a_run_killed_after_any_journal_record_or_in_the_middle_of_one_is_resumed_without_redoing_work() {
    use hostenv_activate::adapters::journal::FileJournal;
    let node = NodeName::parse(NODE).expect("node");
    let dir = tempfile::tempdir().expect("tempdir");
    let first = World::new(StubProvider::with_intent(three_activations()));
    let inner = FileJournal::new(dir.path(), node.clone(), std::sync::Arc::new(Silent));
    let path = dir.path().join(inner.file_name(&JobId::new(JOB)));
    let recording = Recording {
        inner,
        path,
        provider: &first.provider,
        points: Default::default(),
    };
    assert!(matches!(run_on(&first, &recording), Outcome::Succeeded(_)));
    let posted = first.provider.posted.borrow().clone();
    let points = recording.points.into_inner();
    assert_eq!(
        points.len(),
        2 + 3 * 3 + 1,
        "start, 3 per action (the last one's end with the closing event), the closing's delivery, end"
    );
    // Where the run may die: after a write (the provider has what was
    // posted until then), just before the next one (it has what was posted
    // in between), or in the middle of the next append (a torn line).
    let mut crashes: Vec<(usize, Vec<u8>)> = vec![(0, Vec::new())];
    for (k, (events, bytes)) in points.iter().enumerate() {
        crashes.push((*events, bytes.clone()));
        if let Some((next_events, next)) = points.get(k + 1) {
            crashes.push((*next_events, bytes.clone()));
            if next.len() > bytes.len() && next.starts_with(bytes) {
                let torn = next[..bytes.len() + (next.len() - bytes.len()) / 2].to_vec();
                crashes.push((*next_events, torn));
            }
        }
    }
    for (events, bytes) in crashes {
        let case = format!("{events} event(s) posted, {} journal byte(s)", bytes.len());
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = FileJournal::new(dir.path(), node.clone(), std::sync::Arc::new(Silent));
        if !bytes.is_empty() {
            std::fs::write(dir.path().join(journal.file_name(&JobId::new(JOB))), &bytes)
                .expect("write");
        }
        let second = World::new(StubProvider::with_intent(three_activations()));
        second
            .provider
            .posted
            .borrow_mut()
            .extend(posted[..events].iter().cloned());
        let outcome = run_on(&second, &journal);
        assert!(
            matches!(outcome, Outcome::Succeeded(_)),
            "{case}: {outcome:?}"
        );
        let all = second.provider.posted.borrow();
        for (phase, n) in [(Activate, 2), (Phase::Reload, 1), (Intent, 1)] {
            let terminal = all
                .iter()
                .filter(|e| e.phase == phase && e.status == Success)
                .count();
            assert_eq!(terminal, n, "{case}: each terminal event once: {all:#?}");
        }
        let record =
            hostenv_activate::ports::Journal::load(&journal, &JobId::new(JOB)).expect("a record");
        assert!(record.pending().is_empty(), "{case}");
        assert_eq!(record.actions.len(), 3, "{case}");
        assert!(
            record.runs.last().is_some_and(|r| r.ended.is_some()),
            "{case}"
        );
    }
}

/// Drops log lines.
struct Silent;

impl hostenv_activate::ports::Log for Silent {
    fn line(
        &self,
        _: hostenv_activate::ports::Level,
        _: &hostenv_activate::ports::LogFields<'_>,
        _: &str,
    ) {
    }
}

/// A run that appended many lines compacts the file when it ends; a small
/// one leaves that to the next run's start (one sync fewer per run).
#[test]
fn a_long_run_is_compacted_when_it_ends() {
    let actions: Vec<Value> = (0..20)
        .map(|i| json!({"op": "activate", "user": format!("u{i}")}))
        .collect();
    let w = World::new(StubProvider::with_intent(intent(json!(actions))));
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(w.journal.rewrites.get(), 2, "at the start and at the end");
    let record = w.journal.record(JOB).expect("a record");
    assert_eq!(record.actions.len(), 20);
    assert!(record.pending().is_empty());
    assert!(record.runs[0].ended.is_some());
}
