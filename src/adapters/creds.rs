//! Credential switching, in one place: the child-side switch to an
//! environment user before `exec`, for the user's programs and for the bus
//! helpers (with their resource limits). This process itself never changes
//! its own ids: what must be done as a user runs in a child.
//!
//! This is the only module allowed `unsafe` (for `pre_exec`); see the SAFETY
//! note there.
#![allow(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::unistd::{geteuid, setgid, setgroups, setuid, Gid, Uid};

use crate::ports::Account;

/// Makes `cmd` start in its own process group (so a timeout can kill the
/// whole tree) and, when we are not already that user, run with the
/// account's uid, primary gid and supplementary groups.
pub fn run_as(cmd: &mut Command, account: &Account) {
    cmd.process_group(0);
    if geteuid().as_raw() == account.uid {
        // Already this user (tests run unprivileged): nothing to switch.
        return;
    }
    let uid = Uid::from_raw(account.uid);
    let gid = Gid::from_raw(account.gid);
    let groups: Vec<Gid> = account.groups.iter().copied().map(Gid::from_raw).collect();
    // SAFETY: the closure runs in the forked child before exec. It only makes
    // the setgroups/setgid/setuid system calls on data prepared (and moved in)
    // by the parent: no allocation, no locks, nothing that another thread of
    // the parent could have left half-done. Order matters: groups and gid
    // first, while we still have the privilege to change them, uid last.
    unsafe {
        cmd.pre_exec(move || {
            setgroups(&groups)?;
            setgid(gid)?;
            setuid(uid)?;
            Ok(())
        });
    }
}

/// What a bus helper may use: it reads whatever the user's bus sends, so
/// its address space, CPU time and open files are capped, and it never
/// writes a core file.
#[derive(Debug, Clone, Copy)]
pub struct HelperLimits {
    /// `RLIMIT_AS`, bytes.
    pub address_space: u64,
    /// `RLIMIT_CPU`, seconds (SIGXCPU, then SIGKILL one second later).
    pub cpu_seconds: u64,
    /// `RLIMIT_NOFILE`.
    pub open_files: u64,
}

/// Makes `cmd` a bus helper for `account`: its own process group, the
/// account's uid, gid and groups (when we are root), [`HelperLimits`], and
/// `SIGKILL` when this process dies (set after the uid switch, which
/// clears it).
pub fn as_bus_helper(cmd: &mut Command, account: &Account, limits: HelperLimits) {
    use nix::sys::prctl;
    use nix::sys::resource::{setrlimit, Resource};
    use nix::sys::signal::Signal;

    cmd.process_group(0);
    let switch = geteuid().as_raw() != account.uid;
    let uid = Uid::from_raw(account.uid);
    let gid = Gid::from_raw(account.gid);
    let groups: Vec<Gid> = account.groups.iter().copied().map(Gid::from_raw).collect();
    // SAFETY: as in `run_as`: the closure runs in the forked child before
    // exec and only makes system calls (setgroups, setgid, setuid, prctl,
    // setrlimit) on data prepared and moved in by the parent: no
    // allocation, no locks. Groups and gid before uid; the parent-death
    // signal after the uid switch, which resets it.
    unsafe {
        cmd.pre_exec(move || {
            if switch {
                setgroups(&groups)?;
                setgid(gid)?;
                setuid(uid)?;
            }
            prctl::set_pdeathsig(Signal::SIGKILL)?;
            setrlimit(
                Resource::RLIMIT_AS,
                limits.address_space,
                limits.address_space,
            )?;
            setrlimit(
                Resource::RLIMIT_CPU,
                limits.cpu_seconds,
                limits.cpu_seconds + 1,
            )?;
            setrlimit(
                Resource::RLIMIT_NOFILE,
                limits.open_files,
                limits.open_files,
            )?;
            setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
            Ok(())
        });
    }
}
