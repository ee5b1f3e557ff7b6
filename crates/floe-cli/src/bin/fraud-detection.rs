//! Stand-alone job binary for the `fraud-detection` example: a user's job looks like this.

fn main() {
    floe::init_logging();
    let result = floe::JobArgs::from_env()
        .map_err(anyhow::Error::from)
        .and_then(floe_cli::examples::fraud_detection::run);
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
