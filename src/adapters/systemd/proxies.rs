//! The few systemd D-Bus interfaces this program calls, declared by hand:
//! generated crates are async-only or reject states they do not know.
//!
//! `JobRemoved` is not declared as a proxy signal: a proxy's signal stream
//! removes its match rule from a task when dropped, and that task keeps the
//! connection (and its socket) alive once the connection is closed. The
//! session in `mod.rs` adds the rule itself and reads the raw messages.
//!
//! Only blocking proxies are generated. Property caching is switched off
//! where the proxies are built (`session.rs`), so every read is a fresh
//! `Get`. Reads of several properties at once go through `batch.rs`.

use zbus::proxy;
use zbus::zvariant::OwnedObjectPath;

/// One row of `ListUnitsByPatterns`: name, description, load state, active
/// state, sub state, followed unit, unit path, job id, job type, job path.
pub type UnitRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
);

#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_async = false,
    blocking_name = "ManagerProxy"
)]
pub trait Manager {
    /// Returns the job's object path.
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Returns the job's object path.
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn kill_unit(&self, name: &str, whom: &str, signal: i32) -> zbus::Result<()>;
    /// `daemon-reload`; the reply comes once the reload is complete.
    fn reload(&self) -> zbus::Result<()>;
    /// Without a subscriber the manager does not emit job signals.
    fn subscribe(&self) -> zbus::Result<()>;
    fn list_units_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<Vec<UnitRow>>;
}

#[proxy(
    interface = "org.freedesktop.systemd1.Job",
    default_service = "org.freedesktop.systemd1",
    gen_async = false,
    blocking_name = "JobProxy"
)]
pub trait Job {
    fn cancel(&self) -> zbus::Result<()>;
}

#[proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1",
    gen_async = false,
    blocking_name = "UnitProxy"
)]
pub trait Unit {
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
}

#[proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1",
    gen_async = false,
    blocking_name = "ServiceProxy"
)]
pub trait Service {
    #[zbus(property)]
    fn result(&self) -> zbus::Result<String>;
}
