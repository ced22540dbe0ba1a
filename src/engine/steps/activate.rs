//! `Activate` step: run the user's `activate` program as the user, within
//! the action's deadline (`activate`, `reload`, and the end of `restore`);
//! exit 0 goes on to the health check.

use crate::model::text::{detail, summary};
use crate::model::{EventPayload, ProgramFailure, Terminal};
use crate::ports::{Account, Level, ProgramOutcome};

use super::{Ctx, Ended};

/// Finds and runs `activate`; anything but exit 0 ends the action.
pub fn run(ctx: &Ctx<'_>, account: &Account) -> Result<(), Ended> {
    match attempt(ctx, account) {
        None => Ok(()),
        Some(terminal) => Err(Ended::With(terminal)),
    }
}

/// `None` when `activate` exited 0, else how the action ends.
fn attempt(ctx: &Ctx<'_>, account: &Account) -> Option<Terminal> {
    let user = &ctx.action.user;
    let search = ctx.ports.programs.find_activate(account);
    let Some(program) = search.found else {
        let msg = format!(
            "activate script not found for user {user} (looked at {})",
            search.looked_at()
        );
        ctx.log(Level::Error, None, None, &msg);
        return Some(Terminal::failed(msg, None));
    };
    if let Some(terminal) = ctx.out_of_time(&format!("run {}", program.display())) {
        return Some(terminal);
    }
    ctx.log(
        Level::Info,
        None,
        None,
        &format!("running {}", program.display()),
    );
    let run =
        match ctx
            .ports
            .programs
            .run(account, &program, &[], ctx.remaining(), ctx.ports.cancel)
        {
            Ok(run) => run,
            Err(e) => {
                return Some(Terminal::failed(
                    format!("could not start {} as {user}: {e:#}", program.display()),
                    None,
                ))
            }
        };
    let payload = |exit_code: Option<i32>| {
        Some(EventPayload::ProgramFailed(ProgramFailure {
            user: user.clone(),
            exit_code,
            detail: detail(&run.output),
        }))
    };
    let summary = summary(&run.output);
    Some(match run.outcome {
        ProgramOutcome::Exited(0) => {
            ctx.log(
                Level::Info,
                None,
                None,
                &format!("{} exited 0", program.display()),
            );
            return None;
        }
        ProgramOutcome::Exited(code) => Terminal::failed(
            format!("Activation failed for {user} (exit code {code}): {summary}"),
            payload(Some(code)),
        ),
        ProgramOutcome::Signalled(signal) => Terminal::failed(
            format!("Activation for {user} was killed by signal {signal}: {summary}"),
            payload(Some(128 + signal)),
        ),
        ProgramOutcome::TimedOut => Terminal::timed_out(
            ctx.timed_out(
                format!(
                    "Activation timed out for {user} after {}s",
                    ctx.timeout_secs()
                ),
                &format!(
                    "running {} as {user} (its whole process tree was ended)",
                    program.display()
                ),
            ),
            payload(None),
        ),
        ProgramOutcome::Interrupted => Terminal {
            payload: payload(None),
            ..ctx.interrupted("activating")
        },
    })
}
