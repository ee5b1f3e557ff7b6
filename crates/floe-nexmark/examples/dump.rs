//! Prints the stream as tab-separated lines, for the hand check against
//! the Java generator (`java/check.sh`): `dump EVENTS GENERATORS [SEED]
//! [TPS]`. The contents of `extra` and `url` are left out (the JVM draws
//! the tables they come from with an unseeded random); `extra`'s length is
//! printed.

use floe_nexmark::{Event, NexmarkConfig, NexmarkGenerator};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| -> anyhow::Result<u64> {
        Ok(args
            .get(i)
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let (events, generators, seed) = (arg(0, 1000)?, arg(1, 1)? as u32, arg(2, 0)?);
    let tps = arg(3, u64::from(floe_nexmark::DEFAULT_TPS))? as u32;
    let config = NexmarkConfig::new(events).with_seed(seed).with_tps(tps);
    let generator = NexmarkGenerator::new(config)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    use std::io::Write;
    for event in generator.events(generators) {
        match event {
            Event::Person(p) => writeln!(
                out,
                "P\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                p.id,
                p.name,
                p.email_address,
                p.credit_card,
                p.city,
                p.state,
                p.date_time,
                p.extra.len()
            )?,
            Event::Auction(a) => writeln!(
                out,
                "A\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                a.id,
                a.item_name,
                a.description,
                a.initial_bid,
                a.reserve,
                a.date_time,
                a.expires,
                a.seller,
                a.category,
                a.extra.len()
            )?,
            Event::Bid(b) => writeln!(
                out,
                "B\t{}\t{}\t{}\t{}\t{}\t{}",
                b.auction,
                b.bidder,
                b.price,
                b.channel,
                b.date_time,
                b.extra.len()
            )?,
        }
    }
    Ok(())
}
