//! Ending what a user's program leaves behind outside its process group.
//! A descendant can leave the group (`setsid`, a double fork); killing the
//! group alone would leave it running behind our report. This process is a
//! child subreaper, so such orphans become its own children: they are found
//! through this process's own `/proc/self/task/*/children` lists (so the
//! cost does not grow with the node's process count), killed and reaped
//! here.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{getpid, gettid, Pid};

use crate::ports::Deadline;

/// Makes orphaned descendants of our children ours (`PR_SET_CHILD_SUBREAPER`).
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// Whether this kernel has `/proc/<pid>/task/<tid>/children`
/// (`CONFIG_PROC_CHILDREN`), decided once from the calling thread's own file.
fn has_children_files() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| Path::new(&format!("/proc/self/task/{}/children", gettid())).exists())
}

/// Set once the fallback warning has been handed out.
static WARNED: AtomicBool = AtomicBool::new(false);

const FALLBACK_WARNING: &str =
    "this kernel has no /proc/<pid>/task/<tid>/children (CONFIG_PROC_CHILDREN): finding what a \
     program left behind scans every process on the machine after each program";

/// A warning, the first time only, when this kernel has no children lists
/// and every process on the machine is scanned instead.
pub fn fallback_warning() -> Option<&'static str> {
    warning_once(has_children_files(), &WARNED)
}

fn warning_once(has_lists: bool, warned: &AtomicBool) -> Option<&'static str> {
    if has_lists || warned.swap(true, Ordering::SeqCst) {
        return None;
    }
    Some(FALLBACK_WARNING)
}

/// The pids in a `children` file: decimal numbers separated by spaces
/// (with a trailing space). Anything else is skipped.
fn parse_children(text: &str) -> impl Iterator<Item = i32> + '_ {
    text.split_ascii_whitespace()
        .filter_map(|field| field.parse::<i32>().ok())
        .filter(|&pid| pid > 0)
}

/// Children of every thread of process `pid`. A child belongs to the thread
/// that forked it (or, once that thread is gone, to another thread of the
/// process), so every thread's list is read. A thread that ends meanwhile
/// has no list any more: skipped, its children have moved to a thread read
/// next time. Zombies stay listed until they are reaped.
fn listed_children(pid: i32) -> BTreeSet<i32> {
    let tasks = Path::new("/proc").join(pid.to_string()).join("task");
    let Ok(dir) = std::fs::read_dir(&tasks) else {
        return BTreeSet::new();
    };
    dir.filter_map(|task| {
        let tid = task.ok()?.file_name();
        std::fs::read_to_string(tasks.join(tid).join("children")).ok()
    })
    .flat_map(|text| parse_children(&text).collect::<Vec<_>>())
    .collect()
}

/// `ppid` from `/proc/<pid>/stat` (the field after the state, after the
/// last `)`, since the command name may contain anything).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Children of process `pid` found by reading every process's parent: the
/// fallback for kernels without children lists, one read per process.
fn scanned_children(pid: i32) -> BTreeSet<i32> {
    #[cfg(test)]
    tests::SCANS.with(|scans| scans.set(scans.get() + 1));
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&child| parent_of(child) == Some(pid))
        .collect()
}

/// Children this process keeps on purpose while programs run (a bus helper
/// kept for the action's next call): never strays.
static SPARED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn spared() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    SPARED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Marks `pid`, a child this process started and will reap itself, as no
/// stray until [`unspare`] (call that before reaping it).
pub fn spare(pid: Pid) {
    spared().insert(pid.as_raw());
}

/// Undoes [`spare`].
pub fn unspare(pid: Pid) {
    spared().remove(&pid.as_raw());
}

/// This process's children (zombies included), except `keep` and those
/// [`spare`]d.
pub fn children(keep: Pid) -> Vec<Pid> {
    let me = getpid().as_raw();
    let all = if has_children_files() {
        listed_children(me)
    } else {
        scanned_children(me)
    };
    let spared = spared().clone();
    all.into_iter()
        .filter(|&pid| pid != keep.as_raw() && !spared.contains(&pid))
        .map(Pid::from_raw)
        .collect()
}

/// SIGKILLs and reaps every child of this process except `keep` (whose
/// status belongs to whoever waits for it) and the [`spare`]d, and then what those leave
/// behind, for at most `limit`. Returns how many processes were ended.
///
/// Callers must make sure no other child of this process is running that
/// should survive: `ProcessRunner` runs one program at a time.
pub fn end_strays(keep: Pid, limit: Duration) -> usize {
    let deadline = Deadline::after(limit);
    let mut ended = BTreeSet::new();
    loop {
        let strays = children(keep);
        if strays.is_empty() || deadline.reached() {
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

    #[test]
    fn parses_a_children_list() {
        let pids = |text| parse_children(text).collect::<Vec<_>>();
        assert_eq!(pids(""), Vec::<i32>::new());
        assert_eq!(pids("4242 "), vec![4242]);
        assert_eq!(pids("1 22 333 \n"), vec![1, 22, 333]);
        // Nothing the kernel writes, but never a panic or a wrong pid.
        assert_eq!(pids("  7\t8\nx9 -3 0 99999999999 10"), vec![7, 8, 10]);
    }

    #[test]
    fn the_fallback_is_announced_once_and_only_when_needed() {
        let warned = AtomicBool::new(false);
        assert_eq!(warning_once(true, &warned), None);
        assert_eq!(warning_once(false, &warned), Some(FALLBACK_WARNING));
        assert_eq!(warning_once(false, &warned), None, "once");
    }

    thread_local! {
        /// Full scans of `/proc` made by this test thread.
        pub static SCANS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// The cost of finding strays must not grow with the machine: where the
    /// kernel lists children (every machine CI runs on), no scan happens.
    #[test]
    fn with_children_lists_nothing_scans_every_process() {
        assert!(
            has_children_files(),
            "this kernel has no /proc/<pid>/task/<tid>/children; the cheap path cannot be tested here"
        );
        let before = SCANS.with(std::cell::Cell::get);
        let _ = children(getpid());
        assert_eq!(
            SCANS.with(std::cell::Cell::get),
            before,
            "children() scanned /proc"
        );
    }

    /// Tests cannot start children of their own here: a process runner
    /// test running meanwhile ends every child of this process. Our parent
    /// (cargo, or whatever runs the tests) has us as a child for as long as
    /// we run, possibly forked from one of its other threads.
    #[test]
    fn both_ways_find_this_process_among_its_parents_children() {
        let parent = nix::unistd::getppid().as_raw();
        let me = getpid().as_raw();
        let scanned = scanned_children(parent);
        assert!(scanned.contains(&me), "{me} in the scan {scanned:?}");
        if has_children_files() {
            let listed = listed_children(parent);
            assert!(listed.contains(&me), "{me} in the lists {listed:?}");
        } else {
            eprintln!("no children lists on this kernel: only the fallback scan is tested");
        }
        assert!(listed_children(-1).is_empty());
    }
}
