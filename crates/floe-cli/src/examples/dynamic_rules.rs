//! The seed's broadcast-state example: user actions keyed by user, a set
//! of patterns broadcast to every subtask, and a match emitted whenever a
//! user's two consecutive actions form a pattern.
//!
//! `floe run dynamic-rules --actions N --users U [--patterns <list>]
//! [--rate R] [--output <dir>] [-p N]`: action `i` is by user `i mod U`
//! and is [`action_of`]`(i)`; the patterns (`name:first>second`, comma
//! separated) arrive as one broadcast rule set. Actions that arrive before
//! the rule set wait in keyed state and are evaluated, in order, when it
//! arrives (through `apply_to_keyed_state`), so the matches do not depend
//! on which input happens to be read first. Output: `<user> <pattern>`.

use clap::Parser;
use floe::JobArgs;
use floe::prelude::*;
use serde::{Deserialize, Serialize};

/// The example's own arguments.
#[derive(Debug, Parser)]
#[command(
    name = "dynamic-rules",
    about = "Matches user actions against broadcast patterns"
)]
pub struct Args {
    /// Number of actions to generate.
    #[arg(long)]
    pub actions: u64,
    /// Number of users (action i is by user i mod U).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub users: u64,
    /// Patterns as `name:first>second`, comma separated.
    #[arg(long, default_value = DEFAULT_PATTERNS, value_parser = parse_patterns, value_delimiter = ',')]
    pub patterns: Vec<Pattern>,
    /// Limit the action source to this many actions per second.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Write `<user> <pattern>` lines into part files in this directory
    /// (exactly once with checkpointing) instead of stdout.
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,
}

/// The patterns used when none are given.
pub const DEFAULT_PATTERNS: &str = "login-logout:login>logout,browse-buy:browse>buy";

/// The actions users take.
pub const ACTIONS: [&str; 4] = ["login", "browse", "buy", "logout"];

/// Action `i` of the generated input.
pub fn action_of(i: u64) -> &'static str {
    // splitmix64, so consecutive actions of a user vary.
    let mut x = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    ACTIONS[(x % ACTIONS.len() as u64) as usize]
}

/// A user's action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// Who.
    pub user: u64,
    /// What.
    pub action: String,
}

/// Two consecutive actions of one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pattern {
    /// The pattern's name (its key in broadcast state).
    pub name: String,
    /// The earlier action.
    pub first: String,
    /// The action right after it.
    pub second: String,
}

/// Parses one `name:first>second` (clap splits the comma list).
pub fn parse_patterns(s: &str) -> Result<Pattern, String> {
    let (name, rest) = s
        .split_once(':')
        .ok_or_else(|| format!("pattern '{s}' is not name:first>second"))?;
    let (first, second) = rest
        .split_once('>')
        .ok_or_else(|| format!("pattern '{s}' is not name:first>second"))?;
    if name.is_empty() || first.is_empty() || second.is_empty() {
        return Err(format!("pattern '{s}' has an empty part"));
    }
    Ok(Pattern {
        name: name.into(),
        first: first.into(),
        second: second.into(),
    })
}

/// The broadcast state: patterns by name.
pub fn patterns_descriptor() -> MapStateDescriptor<String, Pattern> {
    MapStateDescriptor::new("patterns")
}

/// Evaluates each user's actions against the broadcast patterns.
#[derive(Clone)]
pub struct PatternEvaluator {
    prev: ValueState<String>,
    pending: ListState<String>,
    patterns: BroadcastState<String, Pattern>,
}

impl Default for PatternEvaluator {
    fn default() -> Self {
        PatternEvaluator {
            prev: ValueState::new("previous-action"),
            pending: ListState::new(PENDING),
            patterns: BroadcastState::new(patterns_descriptor()),
        }
    }
}

/// The keyed state of waiting actions (visited when the rules arrive).
const PENDING: &str = "pending-actions";

/// Emits `(user, pattern)` for every pattern `previous → action` forms.
fn emit_matches<'p>(
    user: u64,
    previous: &str,
    action: &str,
    patterns: impl IntoIterator<Item = &'p Pattern>,
    out: &mut Collector<'_, (u64, String)>,
) {
    for p in patterns {
        if p.first == previous && p.second == action {
            out.collect((user, p.name.clone()));
        }
    }
}

impl KeyedBroadcastProcessFunction<u64, Action, Vec<Pattern>, (u64, String)> for PatternEvaluator {
    fn process_element(
        &mut self,
        a: Action,
        ctx: &mut KeyedReadOnlyContext<'_, u64>,
        out: &mut Collector<'_, (u64, String)>,
    ) -> anyhow::Result<()> {
        if self.patterns.is_empty(ctx)? {
            // No rules yet: keep the action until they arrive.
            return Ok(self.pending.add(ctx, a.action)?);
        }
        if let Some(p) = self.prev.value(ctx)? {
            let patterns = self.patterns.entries(ctx)?.map(|(_, p)| p);
            emit_matches(a.user, &p, &a.action, patterns, out);
        }
        self.prev.update(ctx, a.action)?;
        Ok(())
    }

    fn process_broadcast_element(
        &mut self,
        rules: Vec<Pattern>,
        ctx: &mut KeyedBroadcastContext<'_, u64>,
        out: &mut Collector<'_, (u64, String)>,
    ) -> anyhow::Result<()> {
        for p in rules {
            self.patterns.put(ctx, p.name.clone(), p)?;
        }
        let Self {
            prev,
            pending,
            patterns,
        } = self;
        ctx.apply_to_keyed_state(&*pending, |user, kctx| {
            for action in pending.get(kctx)? {
                if let Some(p) = prev.value(kctx)? {
                    let patterns = patterns.entries(kctx)?.map(|(_, p)| p);
                    emit_matches(*user, &p, &action, patterns, out);
                }
                prev.update(kctx, action)?;
            }
            pending.clear(kctx)?;
            Ok(())
        })
    }
}

/// The generated actions.
pub fn actions(n: u64, users: u64, rate: Option<f64>) -> GeneratorSource<Action> {
    let s = GeneratorSource::new(n, move |i| Action {
        user: i % users,
        action: action_of(i).to_string(),
    });
    match rate {
        Some(r) => s.with_rate(r),
        None => s,
    }
}

/// Runs the job.
pub fn run(args: JobArgs) -> anyhow::Result<()> {
    let opts: Args = super::parse_job_args("dynamic-rules", &args);
    if opts.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        anyhow::bail!("--rate must be a positive number of actions per second");
    }
    let env = StreamEnvironment::from_job_args(&args);
    let rules = env
        .from_collection(vec![opts.patterns.clone()])
        .uid("patterns")
        .broadcast_with(patterns_descriptor());
    let matches = env
        .from_source(actions(opts.actions, opts.users, opts.rate), "Actions")
        .uid("actions")
        // One reader, so each user's actions stay in order (as one Kafka
        // partition per user would keep them).
        .set_parallelism(1)
        .key_by(|a: &Action| a.user)
        .connect(&rules)
        .process(PatternEvaluator::default())
        .name("Pattern Evaluator")
        .uid("pattern-evaluator");
    super::write_pairs(&matches, opts.output.as_deref());
    env.execute("DynamicRules")?;
    Ok(())
}
