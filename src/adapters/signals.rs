//! SIGTERM and SIGINT (comin restarted, an operator's Ctrl-C) must not kill
//! the run outright: they set the shared cancel flag, and the run ends the
//! current action, reports it as interrupted and exits.

use anyhow::Context;
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::ports::Cancel;

/// Makes SIGTERM and SIGINT set `cancel` instead of terminating the process.
pub fn install(cancel: &Cancel) -> anyhow::Result<()> {
    for (signal, name) in [(SIGTERM, "SIGTERM"), (SIGINT, "SIGINT")] {
        signal_hook::flag::register(signal, cancel.flag())
            .with_context(|| format!("cannot install the {name} handler"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigterm_sets_the_cancel_flag() {
        let cancel = Cancel::new();
        install(&cancel).expect("install handlers");
        assert!(!cancel.is_cancelled());
        signal_hook::low_level::raise(SIGTERM).expect("raise SIGTERM");
        assert!(
            cancel.is_cancelled(),
            "SIGTERM set the flag and did not kill us"
        );
    }
}
