//! `activate` and `reload`: run the user's `activate` program as the user,
//! within the action timeout. Also the last step of `restore`.

use crate::model::{EventPayload, Op, ProgramFailure};
use crate::ports::{Account, Level, ProgramOutcome};

use super::super::report::Stop;
use super::super::text::{fold_output, truncate_tail};
use super::{tri, Ctx, Terminal};

/// Characters of output in a failure message and in its payload.
const SUMMARY_CHARS: usize = 220;
const DETAIL_CHARS: usize = 4000;

pub fn perform(ctx: &Ctx<'_>) -> Result<Terminal, Stop> {
    ctx.post_running()?;
    let account = tri!(ctx.account());
    let done = match ctx.action.op {
        Op::Reload => "Reload completed",
        _ => "Activation completed",
    };
    Ok(run_activate(ctx, &account, done))
}

/// Finds and runs `activate`; `done` starts the success message.
pub fn run_activate(ctx: &Ctx<'_>, account: &Account, done: &str) -> Terminal {
    let user = &ctx.action.user;
    let Some(program) = ctx.ports.programs.find_activate(account) else {
        let msg = format!(
            "activate script not found for user {user} (looked on the user's PATH, in /etc/profiles/per-user/{user}/bin, /nix/var/nix/profiles/per-user/{user}/profile/bin and ~/.nix-profile/bin)"
        );
        ctx.log(Level::Error, None, None, &msg);
        return Terminal::failed(msg);
    };
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
                return Terminal::failed(format!(
                    "could not start {} as {user}: {e:#}",
                    program.display()
                ))
            }
        };
    let payload = |exit_code: Option<i32>| {
        Some(EventPayload::ProgramFailed(ProgramFailure {
            user: user.clone(),
            exit_code,
            detail: truncate_tail(&run.output, DETAIL_CHARS),
        }))
    };
    let summary = fold_output(&run.output, SUMMARY_CHARS);
    match run.outcome {
        ProgramOutcome::Exited(0) => Terminal::Success(format!("{done} for {user}"), None),
        ProgramOutcome::Exited(code) => Terminal::Failed(
            format!("Activation failed for {user} (exit code {code}): {summary}"),
            payload(Some(code)),
        ),
        ProgramOutcome::Signalled(signal) => Terminal::Failed(
            format!("Activation for {user} was killed by signal {signal}: {summary}"),
            payload(Some(128 + signal)),
        ),
        ProgramOutcome::TimedOut => Terminal::TimedOut(
            format!(
                "Activation timed out for {user} after {}s",
                ctx.timeout_secs()
            ),
            payload(None),
        ),
        ProgramOutcome::Interrupted => match ctx.interrupted("activating") {
            Terminal::Failed(msg, _) => Terminal::Failed(msg, payload(None)),
            other => other,
        },
    }
}
