//! Ending what a user's program leaves behind outside its process group.
//! A descendant can leave the group (`setsid`, a double fork); killing the
//! group alone would leave it running behind our report. This process is a
//! child subreaper, so such orphans become its own children: they are found
//! in `/proc`, killed and reaped here.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{getpid, Pid};

/// Makes orphaned descendants of our children ours (`PR_SET_CHILD_SUBREAPER`).
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// `ppid` from `/proc/<pid>/stat` (the field after the state, after the
/// last `)`, since the command name may contain anything).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// This process's children, except `keep`.
pub fn children(keep: Pid) -> Vec<Pid> {
    let me = getpid().as_raw();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != keep.as_raw() && parent_of(pid) == Some(me))
        .map(Pid::from_raw)
        .collect()
}

/// SIGKILLs and reaps every child of this process except `keep` (whose
/// status belongs to whoever waits for it), and then what those leave
/// behind, for at most `limit`. Returns how many processes were ended.
///
/// Callers must make sure no other child of this process is running that
/// should survive: `ProcessRunner` runs one program at a time.
pub fn end_strays(keep: Pid, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    let mut ended = BTreeSet::new();
    loop {
        let strays = children(keep);
        if strays.is_empty() || Instant::now() >= deadline {
            return ended.len();
        }
        for pid in strays {
            // A zombie ignores the signal; the wait below collects it.
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
            ended.insert(pid.as_raw());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_parent_even_with_odd_command_names() {
        assert_eq!(
            parent_of(getpid().as_raw()),
            Some(nix::unistd::getppid().as_raw())
        );
        assert_eq!(parent_of(-1), None);
    }
}
