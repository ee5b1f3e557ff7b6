//! Stand-alone job binary for the `nexmark` example: a user's job looks like this.

fn main() {
    floe::init_logging();
    let result = floe::JobArgs::from_env()
        .map_err(anyhow::Error::from)
        .and_then(floe_cli::examples::nexmark::run);
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
