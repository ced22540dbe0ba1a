//! `--dry-run`: what a deployment of this commit would do on this node, and
//! read-only preflight checks (user, unit load state, restic wrapper,
//! activate program). Posts nothing, starts nothing, writes nothing.

use serde::Serialize;

use crate::model::{validate_intent, Action, Op};
use crate::ports::{Provider, UserPrograms, UserSystemd, Users};

/// The read-only part of the world a dry run looks at.
#[derive(Clone, Copy)]
pub struct Preflight<'a> {
    pub provider: &'a dyn Provider,
    pub users: &'a dyn Users,
    pub systemd: &'a dyn UserSystemd,
    pub programs: &'a dyn UserPrograms,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedAction {
    #[serde(flatten)]
    pub action: Action,
    /// What the real run would do, step by step.
    pub would: Vec<String>,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub sha: String,
    pub node: String,
    pub job_id: Option<String>,
    /// Set when there is nothing to plan: no intent, an invalid one, or a provider error.
    pub problem: Option<String>,
    pub actions: Vec<PlannedAction>,
    pub ok: bool,
}

impl Report {
    fn problem(sha: &str, node: &str, job: Option<String>, problem: String, ok: bool) -> Report {
        Report {
            sha: sha.to_owned(),
            node: node.to_owned(),
            job_id: job,
            problem: Some(problem),
            actions: Vec::new(),
            ok,
        }
    }
}

/// Fetches the intent once and checks each action's preconditions.
pub fn plan(sha: &str, node: &str, world: Preflight<'_>) -> Report {
    let envelope = match world.provider.intent_by_sha(sha) {
        Ok(Some(envelope)) => envelope,
        Ok(None) => {
            return Report::problem(
                sha,
                node,
                None,
                format!("no intent for {sha} on {node}"),
                true,
            )
        }
        Err(e) => {
            return Report::problem(
                sha,
                node,
                None,
                format!("cannot fetch the intent: {e}"),
                false,
            )
        }
    };
    let job = Some(envelope.job_id.to_string());
    let intent = match validate_intent(&envelope.intent) {
        Ok(intent) => intent,
        Err(e) => {
            let msg = format!("Invalid deploy intent payload for node {node}: {e}");
            return Report::problem(sha, node, job, msg, false);
        }
    };
    let actions: Vec<PlannedAction> = intent
        .actions
        .into_iter()
        .map(|action| plan_action(node, action, world))
        .collect();
    let ok = actions.iter().all(|a| a.checks.iter().all(|c| c.ok));
    Report {
        sha: sha.to_owned(),
        node: node.to_owned(),
        job_id: job,
        problem: None,
        actions,
        ok,
    }
}

fn check(name: impl Into<String>, result: Result<String, String>) -> Check {
    let (ok, detail) = match result {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    Check {
        check: name.into(),
        ok,
        detail,
    }
}

fn plan_action(node: &str, action: Action, world: Preflight<'_>) -> PlannedAction {
    let user = action.user.clone();
    let mut would = Vec::new();
    let mut checks = Vec::new();
    let account = world.users.lookup(&user);
    checks.push(check(
        "user exists",
        account
            .as_ref()
            .map(|a| format!("{user} has uid {} and home {}", a.uid, a.home.display()))
            .map_err(|e| format!("{e:#}")),
    ));
    let account = account.ok();
    let activate_check = |checks: &mut Vec<Check>| {
        if let Some(a) = &account {
            checks.push(check(
                "activate program found",
                world
                    .programs
                    .find_activate(a)
                    .map(|p| p.display().to_string())
                    .ok_or_else(|| format!("activate script not found for user {user}")),
            ));
        }
    };
    let other =
        |n: &Option<crate::model::NodeName>| n.as_ref().filter(|n| n.as_str() != node).cloned();
    match action.op {
        Op::Activate | Op::Reload => {
            would.push(format!("run {user}'s activate program as {user}"));
            activate_check(&mut checks);
        }
        Op::Backup if action.migrations.is_empty() => {
            would.push(format!("nothing to back up for {user} (no migrations)"));
        }
        Op::Backup => {
            for key in &action.migrations {
                let unit = key.unit_name();
                would.push(format!(
                    "start {unit} in {user}'s systemd and wait for it, then read the new snapshot id with {} snapshots --tag {key} --json",
                    key.wrapper_name()
                ));
                if let Some(a) = &account {
                    checks.push(check(
                        format!("{unit} is loaded"),
                        match world.systemd.load_state(a, &unit) {
                            Ok(state) if state == "loaded" => Ok("LoadState=loaded".into()),
                            Ok(state) => Err(format!("LoadState={state}")),
                            Err(e) => Err(format!("{e:#}")),
                        },
                    ));
                    checks.push(check(
                        format!("restic wrapper {} found", key.wrapper_name()),
                        world
                            .programs
                            .find_restic_wrapper(a, key)
                            .map(|p| p.display().to_string())
                            .ok_or_else(|| {
                                format!("{} not found for user {user}", key.wrapper_name())
                            }),
                    ));
                }
            }
            would.push(format!(
                "post the snapshot ids as this node's backup of {user}"
            ));
        }
        Op::Restore => {
            if !action.migrations.is_empty() {
                match &action.from_node {
                    None => checks.push(check(
                        "fromNode set",
                        Err("restore lists migrations but no fromNode".into()),
                    )),
                    Some(from) => {
                        if other(&action.from_node).is_some() {
                            would.push(format!("wait for {from}'s backup of {user}"));
                        }
                        would.push(format!(
                            "write /run/hostenv/user/{user}/restore/plan.json with the snapshot ids"
                        ));
                    }
                }
            }
            would.push(format!(
                "run {user}'s activate program as {user} (it performs the restore)"
            ));
            activate_check(&mut checks);
        }
        Op::Deactivate => {
            if let Some(to) = other(&action.to_node) {
                would.push(format!("wait for {to} to activate {user}"));
            }
            would.push(format!(
                "stop hostenv.target in {user}'s systemd and reload it"
            ));
            if let Some(a) = &account {
                // Informational: a target that is not loaded is fine to stop.
                let state = world
                    .systemd
                    .load_state(a, "hostenv.target")
                    .map_err(|e| format!("{e:#}"));
                checks.push(check(
                    "user's systemd reachable",
                    state.map(|s| format!("hostenv.target LoadState={s}")),
                ));
            }
        }
    }
    PlannedAction {
        action,
        would,
        checks,
    }
}

/// Human-readable rendering.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let job = report
        .job_id
        .as_deref()
        .map(|j| format!(" (job {j})"))
        .unwrap_or_default();
    out.push_str(&format!(
        "Dry run for commit {} on node {}{job}; nothing is posted, started or written.\n",
        report.sha, report.node
    ));
    if let Some(problem) = &report.problem {
        out.push_str(&format!("{problem}\n"));
        return out;
    }
    if report.actions.is_empty() {
        out.push_str("The intent has no actions for this node.\n");
    }
    for (i, planned) in report.actions.iter().enumerate() {
        let a = &planned.action;
        let mut route = Vec::new();
        if let Some(from) = &a.from_node {
            route.push(format!("from {from}"));
        }
        if let Some(to) = &a.to_node {
            route.push(format!("to {to}"));
        }
        if !a.migrations.is_empty() {
            let keys: Vec<&str> = a.migrations.iter().map(|k| k.as_str()).collect();
            route.push(format!("migrations {}", keys.join(", ")));
        }
        let route = if route.is_empty() {
            String::new()
        } else {
            format!(" ({})", route.join(", "))
        };
        out.push_str(&format!("\n{}. {} {}{route}\n", i + 1, a.op, a.user));
        for step in &planned.would {
            out.push_str(&format!("   would: {step}\n"));
        }
        for c in &planned.checks {
            let mark = if c.ok { "ok  " } else { "FAIL" };
            out.push_str(&format!("   [{mark}] {}: {}\n", c.check, c.detail));
        }
    }
    let failed: usize = report
        .actions
        .iter()
        .map(|a| a.checks.iter().filter(|c| !c.ok).count())
        .sum();
    out.push_str(&if failed == 0 {
        "\nAll preflight checks passed.\n".to_owned()
    } else {
        format!("\n{failed} preflight check(s) failed.\n")
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_without_intent_is_ok_and_says_so() {
        let r = Report::problem(
            "abc",
            "node-a",
            None,
            "no intent for abc on node-a".into(),
            true,
        );
        let text = render_text(&r);
        assert!(text.contains("no intent for abc on node-a"));
        assert!(r.ok);
    }
}
