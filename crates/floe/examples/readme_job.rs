//! The job shown in README.md, kept here so it always compiles.
//! Run: `cargo run -p floe --example readme_job -- -p 2`.

use floe::prelude::*;

#[derive(Clone)]
struct CountPerKey {
    count: ValueState<u64>,
}

impl KeyedProcessFunction<u64, (u64, u64), (u64, u64)> for CountPerKey {
    fn process_element(
        &mut self,
        (k, v): (u64, u64),
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, u64)>,
    ) -> anyhow::Result<()> {
        let n = self.count.value(ctx)?.unwrap_or(0) + v;
        self.count.update(ctx, n)?;
        out.collect((k, n));
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let args = floe::JobArgs::from_env()?; // -p, --config, -D
    floe::init_logging();
    let env = StreamEnvironment::from_job_args(&args);
    env.from_source(GeneratorSource::new(1_000, |i| (i % 10, 1u64)), "Generator")
        .uid("gen")
        .key_by(|(k, _): &(u64, u64)| *k)
        .process(CountPerKey {
            count: ValueState::new("count"),
        })
        .uid("count")
        .map(|(k, n)| format!("{k} {n}"))
        .print();
    env.execute("KeyedCount")?;
    Ok(())
}
