//! What the cluster commands share: reading the configuration layers
//! (file, then `-D` flags) with unknown keys refused, and waiting for the
//! signal that ends a role.

use std::path::PathBuf;

use floe::core::Configuration;

/// The configuration file name looked for by default, as for jobs.
const CONFIG_FILE_NAME: &str = "floe-conf.yaml";

/// The configuration file (`--config`, else `$FLOE_CONF_DIR/floe-conf.yaml`,
/// else `./conf/floe-conf.yaml` when present) overlaid with the `-D`
/// flags; any key no part of Floe reads is an error, so a typo stops the
/// process instead of leaving a default in force.
pub(crate) fn load(config: Option<&str>, dynamic: &[String]) -> anyhow::Result<Configuration> {
    let file = match config {
        Some(p) => Some(PathBuf::from(p)),
        None => match std::env::var_os("FLOE_CONF_DIR") {
            Some(d) => Some(PathBuf::from(d).join(CONFIG_FILE_NAME)),
            None => {
                let local = PathBuf::from("conf").join(CONFIG_FILE_NAME);
                local.is_file().then_some(local)
            }
        },
    };
    let mut merged = match file {
        Some(p) => Configuration::from_yaml_file(&p)?,
        None => Configuration::new(),
    };
    let mut flags = Configuration::new();
    for d in dynamic {
        flags.set_dynamic_property(d)?;
    }
    merged.merge(&flags);
    floe_cluster::config::check_known_keys(&merged)?;
    Ok(merged)
}

/// The signals that end a role (SIGTERM, SIGINT), registered before the
/// role starts so that none is missed.
pub(crate) struct Termination {
    runtime: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Termination {
    pub(crate) fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (term, int) = {
            let _guard = runtime.enter();
            (
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            )
        };
        Ok(Termination { runtime, term, int })
    }

    /// Waits for a signal, or for `failed` to resolve (its error is
    /// returned).
    pub(crate) fn wait<E>(
        &mut self,
        failed: impl std::future::Future<Output = E>,
    ) -> Result<(), E> {
        let (term, int) = (&mut self.term, &mut self.int);
        self.runtime.block_on(async {
            tokio::select! {
                _ = term.recv() => Ok(()),
                _ = int.recv() => Ok(()),
                e = failed => Err(e),
            }
        })
    }
}
