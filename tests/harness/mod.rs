//! A real hosting "node" for tests: throwaway Unix users, each with a real
//! `systemd --user` on a real session bus, real unit files and real restic
//! repositories, brought up as `real-systemd.md` describes (root, a private
//! mount namespace per manager, a delegated cgroup v2 subtree per user).
//!
//! Used by the test targets through `mod harness;`. A [`World`] holds a
//! process-wide lock for its whole life (tests touching it run one at a
//! time: the adapter switches the effective uid process-wide) and tears
//! everything down in `Drop`, also when the test panicked. Users left behind
//! by a killed test run are removed by the next [`World::up`].
//!
//! If the world cannot be built (not root, a tool missing, ...) `up` returns
//! an error saying why: the test fails, it never skips.
#![allow(dead_code)]

pub mod cmd;
pub mod units;

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{geteuid, getgrouplist, Gid, Pid, User};

use hostenv_activate::model::UserName;
use hostenv_activate::ports::Account;

pub use cmd::Ran;
use units::BackupPaths;

/// Prefix of every test account; `hat-<pid>-<tag>`.
const NAME_PREFIX: &str = "hat-";
const SYSTEMD_CANDIDATES: &[&str] = &["/lib/systemd/systemd", "/usr/lib/systemd/systemd"];
const USER_DBUS_SOCKET_UNITS: &[&str] = &[
    "/usr/lib/systemd/user/dbus.socket",
    "/lib/systemd/user/dbus.socket",
];
/// Bound on every command the harness runs as a user.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);
const MANAGER_READY_LIMIT: Duration = Duration::from_secs(20);
const MANAGER_STOP_LIMIT: Duration = Duration::from_secs(10);

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs inside the new mount namespace (as root), then becomes the user's
/// manager. `$1` cgroup.procs, `$2` uid, `$3` gid, `$4` home, `$5` name,
/// `$6` the systemd binary.
const MANAGER_SCRIPT: &str = r#"set -eu
[ -d /run/systemd ] || mkdir /run/systemd
mount -t tmpfs -o mode=0755 tmpfs /run/systemd
mkdir -p /run/systemd/system
echo $$ > "$1"
exec setpriv --reuid="$2" --regid="$3" --init-groups -- env -i \
  HOME="$4" USER="$5" LOGNAME="$5" \
  XDG_RUNTIME_DIR="/run/user/$2" DBUS_SESSION_BUS_ADDRESS="unix:path=/run/user/$2/bus" \
  PATH=/usr/local/bin:/usr/bin:/bin SYSTEMD_LOG_TARGET=console \
  "$6" --user
"#;

/// One user to create on the node.
#[derive(Debug, Clone)]
pub struct UserSpec {
    /// Short label (`[a-z0-9]{1,10}`) to find the user in the world; also
    /// part of its account name.
    pub tag: String,
    /// Each key gets `restic-backups-<key>.service`, `~/.local/bin/restic-<key>`,
    /// a data dir `~/data/<key>` and an initialised repository.
    pub backup_keys: Vec<String>,
    /// Install the failing, hanging and `hostenv.target` units (see `units`).
    pub test_units: bool,
    /// Start the user's `systemd --user` (off: the bus socket is absent).
    pub start_manager: bool,
}

impl UserSpec {
    pub fn new(tag: &str) -> Self {
        Self {
            tag: tag.to_owned(),
            backup_keys: Vec::new(),
            test_units: true,
            start_manager: true,
        }
    }

    pub fn backups(mut self, keys: &[&str]) -> Self {
        self.backup_keys = keys.iter().map(|k| (*k).to_owned()).collect();
        self
    }

    pub fn without_test_units(mut self) -> Self {
        self.test_units = false;
        self
    }

    pub fn without_manager(mut self) -> Self {
        self.start_manager = false;
        self
    }
}

/// A node: its users and their managers. Dropping it removes all of it.
pub struct World {
    users: Vec<TestUser>,
    /// Managers' logs, kept until teardown.
    logs: tempfile::TempDir,
    tools: Tools,
    // Declared last: released only after `Drop::drop` has torn everything down.
    _serial: MutexGuard<'static, ()>,
}

/// Where the programs the harness needs live on this machine.
#[derive(Debug, Clone)]
struct Tools {
    systemd: PathBuf,
    restic: Option<PathBuf>,
    cgroup_root: PathBuf,
}

impl World {
    /// Creates the users and brings up their managers. Fails with the reason
    /// when this machine cannot host a real node.
    pub fn up(specs: &[UserSpec]) -> anyhow::Result<World> {
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let needs_restic = specs.iter().any(|s| !s.backup_keys.is_empty());
        let tools = preflight(needs_restic)?;
        remove_stale_users(&tools.cgroup_root, None);
        let logs = tempfile::Builder::new()
            .prefix("hat-logs-")
            .tempdir()
            .context("cannot create a directory for the managers' logs")?;
        let mut world = World {
            users: Vec::new(),
            logs,
            tools,
            _serial: serial,
        };
        for spec in specs {
            // On error `world` is dropped here, which tears down what exists.
            world
                .add_user(spec)
                .with_context(|| format!("cannot bring up test user {:?}", spec.tag))?;
        }
        Ok(world)
    }

    pub fn users(&self) -> &[TestUser] {
        &self.users
    }

    /// The user created from the spec with this tag.
    pub fn user(&self, tag: &str) -> &TestUser {
        self.users
            .iter()
            .find(|u| u.tag == tag)
            .unwrap_or_else(|| panic!("no test user tagged {tag:?} in this world"))
    }

    fn add_user(&mut self, spec: &UserSpec) -> anyhow::Result<()> {
        let tag_ok = !spec.tag.is_empty()
            && spec.tag.len() <= 10
            && spec
                .tag
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !tag_ok {
            bail!("tag {:?} must be 1-10 characters of [a-z0-9]", spec.tag);
        }
        let name = format!("{NAME_PREFIX}{}-{}", std::process::id(), spec.tag);
        cmd::run_ok(
            Command::new("useradd").args(["-m", "-U", "-s", "/bin/sh", &name]),
            Duration::from_secs(30),
        )?;
        let pw = User::from_name(&name)?
            .with_context(|| format!("useradd made {name} but it cannot be looked up"))?;
        self.users.push(TestUser {
            tag: spec.tag.clone(),
            name: name.clone(),
            uid: pw.uid.as_raw(),
            gid: pw.gid.as_raw(),
            home: pw.dir,
            backup_keys: spec.backup_keys.clone(),
            cgroup: None,
            manager: None,
            manager_log: self.logs.path().join(format!("{name}.log")),
            restic: self.tools.restic.clone(),
        });
        let tools = self.tools.clone();
        let user = self
            .users
            .last_mut()
            .context("the user just added is missing")?;
        user.install_files(spec)?;
        user.make_runtime_dir()?;
        user.make_cgroup(&tools.cgroup_root)?;
        if spec.start_manager {
            user.start_manager(&tools.systemd)?;
        }
        for key in &spec.backup_keys {
            user.restic_ok(key, &["init"])?;
        }
        Ok(())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        while let Some(user) = self.users.pop() {
            let mut user = user;
            for problem in user.teardown() {
                eprintln!("harness teardown of {}: {problem}", user.name);
            }
        }
    }
}

/// One environment user on the node.
pub struct TestUser {
    pub tag: String,
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub backup_keys: Vec<String>,
    cgroup: Option<PathBuf>,
    manager: Option<Child>,
    manager_log: PathBuf,
    restic: Option<PathBuf>,
}

impl TestUser {
    /// The account as the program's `Users` port would resolve it.
    pub fn account(&self) -> Account {
        let groups = CString::new(self.name.as_str())
            .ok()
            .and_then(|c| getgrouplist(&c, Gid::from_raw(self.gid)).ok())
            .map(|gs| gs.into_iter().map(Gid::as_raw).collect())
            .unwrap_or_else(|| vec![self.gid]);
        Account {
            name: UserName::parse(&self.name).expect("test user names are valid"),
            uid: self.uid,
            gid: self.gid,
            groups,
            home: self.home.clone(),
        }
    }

    pub fn runtime_dir(&self) -> PathBuf {
        PathBuf::from(format!("/run/user/{}", self.uid))
    }

    pub fn bus_path(&self) -> PathBuf {
        self.runtime_dir().join("bus")
    }

    pub fn unit_dir(&self) -> PathBuf {
        self.home.join(".config/systemd/user")
    }

    /// The pid of the user's `systemd --user`, while it runs.
    pub fn manager_pid(&self) -> Option<u32> {
        self.manager.as_ref().map(Child::id)
    }

    /// The environment a user's session has (no root variables).
    pub fn env_pairs(&self) -> Vec<String> {
        vec![
            format!("HOME={}", self.home.display()),
            format!("USER={}", self.name),
            format!("LOGNAME={}", self.name),
            format!("XDG_RUNTIME_DIR=/run/user/{}", self.uid),
            format!(
                "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{}/bus",
                self.uid
            ),
            format!(
                "PATH={}/.local/bin:/usr/local/bin:/usr/bin:/bin",
                self.home.display()
            ),
        ]
    }

    /// A command that runs `program` as this user (uid, gid, groups), with
    /// [`env_pairs`](Self::env_pairs) only, in `$HOME`, inside the node's
    /// mount namespace when the manager runs. Add arguments with `.arg(s)`.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = match self.manager_pid() {
            Some(pid) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--mount=/proc/{pid}/ns/mnt"))
                    .arg("--")
                    .arg("setpriv");
                c
            }
            None => Command::new("setpriv"),
        };
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .args(["--init-groups", "--", "env", "-i"])
            .args(self.env_pairs())
            .arg(program)
            .current_dir(&self.home);
        cmd
    }

    /// Runs `program args...` as the user (bounded).
    pub fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<Ran> {
        cmd::run_bounded(self.command(program).args(args), COMMAND_LIMIT)
    }

    /// Runs `program args...` as the user; non-zero exit is an error. Returns stdout.
    pub fn run_ok(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        cmd::run_ok(self.command(program).args(args), COMMAND_LIMIT)
    }

    /// `systemctl --user args...` as the user.
    pub fn systemctl(&self, args: &[&str]) -> anyhow::Result<Ran> {
        let mut all = vec!["--user"];
        all.extend_from_slice(args);
        cmd::run_bounded(
            self.command("systemctl").args(&all),
            Duration::from_secs(30),
        )
    }

    /// `systemctl --user show -p <property> --value <unit>`.
    pub fn unit_property(&self, unit: &str, property: &str) -> anyhow::Result<String> {
        let ran = self.systemctl(&["show", "-p", property, "--value", unit])?;
        if !ran.ok() {
            bail!("systemctl --user show {unit} failed: {}", ran.stderr.trim());
        }
        Ok(ran.stdout.trim().to_owned())
    }

    pub fn daemon_reload(&self) -> anyhow::Result<()> {
        let ran = self.systemctl(&["daemon-reload"])?;
        if !ran.ok() {
            bail!("daemon-reload failed: {}", ran.stderr.trim());
        }
        Ok(())
    }

    /// Writes `$HOME/<rel>` (parents created), owned by the user.
    pub fn write_file(&self, rel: &str, content: &str, mode: u32) -> anyhow::Result<PathBuf> {
        let path = self.home.join(rel);
        if let Some(parent) = path.parent() {
            self.make_dirs(parent)?;
        }
        fs::write(&path, content).with_context(|| format!("write {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        chown(&path, Some(self.uid), Some(self.gid))?;
        Ok(path)
    }

    /// Writes a unit file into `~/.config/systemd/user/` (no reload).
    pub fn write_unit(&self, name: &str, content: &str) -> anyhow::Result<PathBuf> {
        self.write_file(&format!(".config/systemd/user/{name}"), content, 0o644)
    }

    /// The `restic-<key>` wrapper, as the user: `restic-<key> args...`.
    pub fn restic(&self, key: &str, args: &[&str]) -> anyhow::Result<Ran> {
        let wrapper = self.home.join(format!(".local/bin/restic-{key}"));
        cmd::run_bounded(self.command(&wrapper).args(args), COMMAND_LIMIT)
    }

    fn restic_ok(&self, key: &str, args: &[&str]) -> anyhow::Result<String> {
        let wrapper = self.home.join(format!(".local/bin/restic-{key}"));
        cmd::run_ok(self.command(&wrapper).args(args), COMMAND_LIMIT)
    }

    /// `restic-<key> snapshots --tag <key> --json`, parsed.
    pub fn restic_snapshots(&self, key: &str) -> anyhow::Result<serde_json::Value> {
        let out = self.restic_ok(key, &["snapshots", "--tag", key, "--json"])?;
        serde_json::from_str(&out).with_context(|| format!("restic snapshots output: {out}"))
    }

    /// `(pid, command line)` of every process running as this user.
    pub fn processes(&self) -> Vec<(i32, String)> {
        processes_of(self.uid)
    }

    /// The manager's log so far (for failure messages).
    pub fn manager_log(&self) -> String {
        fs::read_to_string(&self.manager_log).unwrap_or_default()
    }

    fn make_dirs(&self, dir: &Path) -> anyhow::Result<()> {
        let rel = dir
            .strip_prefix(&self.home)
            .with_context(|| format!("{} is outside {}", dir.display(), self.home.display()))?;
        let mut at = self.home.clone();
        for part in rel.components() {
            at.push(part);
            if !at.exists() {
                fs::create_dir(&at).with_context(|| format!("mkdir {}", at.display()))?;
                chown(&at, Some(self.uid), Some(self.gid))?;
            }
        }
        Ok(())
    }

    fn install_files(&self, spec: &UserSpec) -> anyhow::Result<()> {
        self.make_dirs(&self.unit_dir())?;
        if spec.test_units {
            self.write_unit(units::FAILING_UNIT, &units::failing_unit())?;
            self.write_unit(units::HANGING_UNIT, &units::hanging_unit())?;
            self.write_unit(units::HOSTENV_TARGET, &units::hostenv_target())?;
            self.write_unit(units::TARGET_SERVICE, &units::target_service())?;
        }
        if spec.backup_keys.is_empty() {
            return Ok(());
        }
        let restic = self
            .restic
            .clone()
            .context("restic is not installed: apt-get install -y restic")?;
        for key in &spec.backup_keys {
            let paths = BackupPaths {
                home: &self.home,
                key,
                restic: &restic,
            };
            self.write_unit(&format!("restic-backups-{key}.service"), &paths.unit())?;
            self.write_file(&paths.wrapper_rel(), &paths.wrapper(), 0o755)?;
            let home = format!("{}/", self.home.display());
            let rel = |abs: String| abs.trim_start_matches(&home).to_owned();
            self.write_file(
                &rel(paths.password_file()),
                &format!("test-password-{key}\n"),
                0o600,
            )?;
            self.write_file(
                &format!("{}/hello.txt", rel(paths.data_dir())),
                &format!("data of {key} for {}\n", self.name),
                0o644,
            )?;
            self.make_dirs(&self.home.join("restic-repos"))?;
        }
        Ok(())
    }

    fn make_runtime_dir(&self) -> anyhow::Result<()> {
        let dir = self.runtime_dir();
        if dir.exists() {
            // Left by an earlier account with this uid.
            fs::remove_dir_all(&dir).with_context(|| format!("remove stale {}", dir.display()))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        chown(&dir, Some(self.uid), Some(self.gid))?;
        Ok(())
    }

    fn make_cgroup(&mut self, root: &Path) -> anyhow::Result<()> {
        let dir = root.join(&self.name);
        fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        self.cgroup = Some(dir.clone());
        chown(&dir, Some(self.uid), Some(self.gid))?;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            chown(entry.path(), Some(self.uid), Some(self.gid))
                .with_context(|| format!("chown {}", entry.path().display()))?;
        }
        Ok(())
    }

    fn start_manager(&mut self, systemd: &Path) -> anyhow::Result<()> {
        let cgroup = self
            .cgroup
            .clone()
            .context("the user's cgroup is missing")?;
        let log = fs::File::create(&self.manager_log)
            .with_context(|| format!("create {}", self.manager_log.display()))?;
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(MANAGER_SCRIPT)
            .arg("hat-manager")
            .arg(cgroup.join("cgroup.procs"))
            .arg(self.uid.to_string())
            .arg(self.gid.to_string())
            .arg(&self.home)
            .arg(&self.name)
            .arg(systemd)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .current_dir("/")
            .spawn()
            .context("cannot start unshare for the user's manager")?;
        self.manager = Some(child);
        let deadline = Instant::now() + MANAGER_READY_LIMIT;
        let mut last = String::new();
        loop {
            if let Some(child) = self.manager.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.manager = None;
                    bail!(
                        "systemd --user for {} exited at once ({status}); its log:\n{}",
                        self.name,
                        self.manager_log()
                    );
                }
            }
            if self.bus_path().exists() {
                if let Ok(ran) = self.systemctl(&["is-system-running"]) {
                    last = format!("{} {}", ran.stdout.trim(), ran.stderr.trim());
                    if matches!(ran.stdout.trim(), "running" | "degraded") {
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "systemd --user for {} not running after {}s (last answer: {last:?}); its log:\n{}",
                    self.name,
                    MANAGER_READY_LIMIT.as_secs(),
                    self.manager_log()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Undoes everything this user has; returns what could not be undone.
    fn teardown(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(mut child) = self.manager.take() {
            if let Err(e) = stop_child(&mut child) {
                problems.push(e);
            }
        }
        if let Err(e) = kill_leftovers(self.uid, self.cgroup.as_deref()) {
            problems.push(e);
        }
        if let Some(cgroup) = self.cgroup.take() {
            if let Err(e) = remove_cgroup(&cgroup) {
                problems.push(e);
            }
        }
        let runtime = self.runtime_dir();
        if runtime.exists() {
            if let Err(e) = fs::remove_dir_all(&runtime) {
                problems.push(format!("remove {}: {e}", runtime.display()));
            }
        }
        if let Err(e) = delete_account(&self.name) {
            problems.push(e);
        }
        problems
    }
}

// ------------------------------------------------------------ machine checks

fn preflight(needs_restic: bool) -> anyhow::Result<Tools> {
    if !geteuid().is_root() {
        bail!(
            "the real-node tests need root (they create users, cgroups and mount namespaces); \
             run them as root: `cargo test --test real_node`"
        );
    }
    for tool in [
        "useradd",
        "userdel",
        "setpriv",
        "unshare",
        "nsenter",
        "systemctl",
    ] {
        if which(tool).is_none() {
            bail!("{tool} is not installed (needed to build a test node)");
        }
    }
    let systemd = SYSTEMD_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context(
            "systemd is not installed (no /lib/systemd/systemd): apt-get install -y systemd",
        )?;
    if !USER_DBUS_SOCKET_UNITS.iter().any(|p| Path::new(p).exists()) {
        bail!("the user D-Bus socket unit is missing: apt-get install -y dbus dbus-user-session");
    }
    let restic = which("restic");
    if needs_restic && restic.is_none() {
        bail!("restic is not installed: apt-get install -y restic (.ci/run does this in CI)");
    }
    let cgroup_root = cgroup_root()
        .context("no cgroup v2 hierarchy (looked at /sys/fs/cgroup/unified and /sys/fs/cgroup)")?;
    Ok(Tools {
        systemd,
        restic,
        cgroup_root,
    })
}

fn cgroup_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.controllers").exists())
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

// ------------------------------------------------------------ teardown parts

/// SIGTERM (the manager stops its units and exits), then SIGKILL.
fn stop_child(child: &mut Child) -> Result<(), String> {
    let pid = Pid::from_raw(i32::try_from(child.id()).map_err(|e| e.to_string())?);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + MANAGER_STOP_LIMIT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return Ok(()),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "manager pid {pid} ignored SIGTERM for {}s; killed",
                    MANAGER_STOP_LIMIT.as_secs()
                ));
            }
            Err(e) => return Err(format!("waiting for manager pid {pid}: {e}")),
        }
    }
}

/// Kills, by pid, every process in the user's cgroup subtree or running
/// with the user's uid, until none is left (bounded).
fn kill_leftovers(uid: u32, cgroup: Option<&Path>) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut pids: Vec<i32> = processes_of(uid).into_iter().map(|(p, _)| p).collect();
        if let Some(cg) = cgroup {
            pids.extend(cgroup_pids(cg));
        }
        pids.sort_unstable();
        pids.dedup();
        pids.retain(|&p| p != std::process::id() as i32);
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("processes still alive after SIGKILL: {pids:?}"));
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn cgroup_pids(dir: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(cgroup_pids(&entry.path()));
            }
        }
    }
    pids
}

/// `rmdir` the subtree, deepest first (cgroups must be empty; retried
/// briefly while the kernel reaps the last members).
fn remove_cgroup(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match rmdir_tree(dir) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("cannot remove cgroup {}: {e}", dir.display()))
            }
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn rmdir_tree(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            rmdir_tree(&entry.path())?;
        }
    }
    fs::remove_dir(dir)
}

fn delete_account(name: &str) -> Result<(), String> {
    let _ = cmd::run_bounded(
        Command::new("userdel").args(["-r", "-f", name]),
        Duration::from_secs(30),
    );
    match User::from_name(name) {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err(format!("userdel could not remove {name}")),
        Err(e) => Err(format!("cannot check whether {name} is gone: {e}")),
    }
}

/// `(pid, command line)` of processes whose real or effective uid is `uid`.
fn processes_of(uid: u32) -> Vec<(i32, String)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(status) = fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let uids: Vec<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|u| u.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        if uids.iter().take(2).any(|&u| u == uid) {
            let cmdline = fs::read(entry.path().join("cmdline"))
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .split('\0')
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            found.push((pid, cmdline));
        }
    }
    found
}

/// Removes the `hat-<pid>-*` users of `pid`, a process that has ended
/// without its teardown (the demo's worker, killed on Ctrl-C), with their
/// processes, cgroups and runtime dirs. Returns the accounts still there.
pub fn remove_users_of(pid: u32) -> Vec<String> {
    if let Some(root) = cgroup_root() {
        remove_stale_users(&root, Some(pid));
    }
    users_of(pid)
}

/// The `hat-<pid>-*` accounts of `pid`.
pub fn users_of(pid: u32) -> Vec<String> {
    let prefix = format!("{NAME_PREFIX}{pid}-");
    fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(':').next())
        .filter(|name| name.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

/// Removes `hat-<pid>-*` users whose test process is gone (a run that was
/// killed before its teardown), with their processes, cgroups and runtime
/// dirs; with `only`, just those of that pid.
fn remove_stale_users(cgroup_root: &Path, only: Option<u32>) {
    let Ok(passwd) = fs::read_to_string("/etc/passwd") else {
        return;
    };
    for line in passwd.lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(uid)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(uid) = uid.parse::<u32>() else {
            continue;
        };
        if uid == 0
            || only.is_some_and(|only| only != pid)
            || Path::new(&format!("/proc/{pid}")).exists()
        {
            continue;
        }
        let cgroup = cgroup_root.join(name);
        let mut stale = TestUser {
            tag: String::new(),
            name: name.to_owned(),
            uid,
            gid: 0,
            home: PathBuf::new(),
            backup_keys: Vec::new(),
            cgroup: cgroup.exists().then_some(cgroup),
            manager: None,
            manager_log: PathBuf::new(),
            restic: None,
        };
        for problem in stale.teardown() {
            eprintln!("harness: removing stale test user {name}: {problem}");
        }
    }
}
