//! `floe info` and `floe savepoint -d`: look into a savepoint or retained
//! checkpoint, and dispose of a savepoint, without a running job.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, bail};
use floe::checkpoint::SnapshotLocation;
use floe::runtime::checkpoint::{OpenedSnapshot, StateFileKind};
use floe::state::KeyedStateFile;
use floe::state::operator::OperatorStateFile;

/// Per state name: kind, key groups holding entries, bytes.
type KeyedSummary = BTreeMap<String, (String, usize, usize)>;

/// Describes a snapshot: kind, id, time, and per operator (by uid) its
/// name, parallelism, max parallelism, key-group ranges, state names and
/// kinds, and sizes. Returns the text that is printed.
pub fn describe(path: &str) -> anyhow::Result<String> {
    let snapshot = OpenedSnapshot::open(path)?;
    let meta = &snapshot.metadata;
    let mut out = String::new();
    let kind = if meta.is_savepoint {
        "Savepoint"
    } else {
        "Checkpoint"
    };
    writeln!(out, "{kind} {}", snapshot.url())?;
    writeln!(out, "  checkpoint id:   {}", meta.checkpoint_id)?;
    writeln!(
        out,
        "  taken at:        {} ({} ms since the epoch)",
        utc_timestamp(meta.timestamp_ms),
        meta.timestamp_ms
    )?;
    writeln!(out, "  format version:  {}", meta.format_version)?;
    writeln!(out, "  operators:       {}", meta.operators.len())?;
    let mut total = 0u64;
    for (uid, subtasks) in &meta.operators {
        let info = meta.operator_info.get(uid);
        writeln!(out)?;
        match info {
            Some(i) => writeln!(
                out,
                "Operator '{}' (uid {uid}): parallelism {}, max parallelism {}{}",
                i.name,
                i.parallelism,
                i.max_parallelism,
                if i.max_parallelism_explicit {
                    " (explicit)"
                } else {
                    " (derived)"
                }
            )?,
            None => writeln!(out, "Operator uid {uid}")?,
        }
        let mut keyed: KeyedSummary = BTreeMap::new();
        let mut operator_states: BTreeMap<String, (String, usize)> = BTreeMap::new();
        for s in subtasks {
            let mut line = format!("  subtask {}:", s.subtask);
            if let Some(f) = &s.keyed {
                total += f.size;
                let bytes = snapshot.store().read_state(f, StateFileKind::Keyed)?;
                let file = KeyedStateFile::decode(&bytes)
                    .with_context(|| format!("keyed state file {}", f.path))?;
                write!(
                    line,
                    " keyed state {} bytes, key groups {}..={}",
                    f.size, file.key_group_start, file.key_group_end
                )?;
                for group in &file.key_groups {
                    for (idx, entries) in &group.states {
                        let Some(m) = file.states.get(*idx as usize) else {
                            continue;
                        };
                        let kind = m
                            .state_kind()
                            .map_or_else(|| format!("kind {}", m.kind), |k| k.to_string());
                        let e = keyed.entry(m.name.clone()).or_insert((
                            format!(
                                "{kind}<{}>{}",
                                short_type_name(&m.value_type),
                                if m.has_ttl() { " with TTL" } else { "" }
                            ),
                            0,
                            0,
                        ));
                        e.1 += 1;
                        e.2 += entries.len();
                    }
                }
            }
            if let Some(f) = &s.operator {
                total += f.size;
                let bytes = snapshot.store().read_state(f, StateFileKind::Operator)?;
                let file = OperatorStateFile::decode(&bytes)
                    .with_context(|| format!("operator state file {}", f.path))?;
                write!(line, " operator state {} bytes", f.size)?;
                for st in &file.states {
                    let e = operator_states.entry(st.name.clone()).or_insert((
                        format!("{}<{}>", st.mode, short_type_name(&st.type_name)),
                        0,
                    ));
                    e.1 += st.elements.len();
                }
            }
            if let Some(raw) = &s.raw {
                total += raw.len() as u64;
                write!(line, " raw state {} bytes", raw.len())?;
            }
            if let Some(f) = &s.channel {
                total += f.size;
                write!(line, " in-flight records {} bytes", f.size)?;
            }
            writeln!(out, "{line}")?;
        }
        for (name, (kind, groups, bytes)) in &keyed {
            writeln!(
                out,
                "  keyed state '{name}': {kind}, entries in {groups} key groups, {bytes} bytes"
            )?;
        }
        for (name, (mode, elements)) in &operator_states {
            writeln!(
                out,
                "  operator state '{name}': {mode}, {elements} elements in all"
            )?;
        }
    }
    writeln!(out)?;
    writeln!(out, "Total state: {total} bytes")?;
    Ok(out)
}

/// A snapshot's timestamp as a reader wants it: UTC to the millisecond.
fn utc_timestamp(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64).map_or_else(
        || "out of range".to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string(),
    )
}

/// A Rust type name without module paths, as a user wrote it:
/// `(alloc::string::String, u64)` reads `(String, u64)`. Snapshots record
/// `std::any::type_name`, which spells every path out.
pub fn short_type_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut segment_start = 0;
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b':' && bytes.get(i + 1) == Some(&b':') {
            // Drop the path written so far in this identifier.
            out.truncate(segment_start);
            i += 2;
            continue;
        }
        if !(c.is_ascii_alphanumeric() || c == b'_') {
            out.push(c as char);
            segment_start = out.len();
        } else {
            out.push(c as char);
        }
        i += 1;
    }
    out
}

/// `floe info <path>`.
pub fn info(path: &str) -> anyhow::Result<()> {
    print!("{}", describe(path)?);
    Ok(())
}

/// `floe savepoint -d <path>`: deletes a savepoint directory. Checkpoints
/// are refused: their job (or its retention setting) owns them.
pub fn dispose(path: &str) -> anyhow::Result<()> {
    match SnapshotLocation::resolve(path).with_context(|| format!("cannot dispose of {path}"))? {
        SnapshotLocation::Savepoint(sp) => {
            let location = sp.location().to_string();
            sp.dispose()
                .with_context(|| format!("cannot dispose of savepoint {location}"))?;
            println!("Savepoint '{location}' disposed.");
            Ok(())
        }
        SnapshotLocation::Checkpoint(c) => bail!(
            "cannot dispose of {path}: it is checkpoint {} of job {}, not a savepoint; checkpoints are removed by their job (state.checkpoints.num-retained, execution.checkpointing.externalized-checkpoint-retention)",
            c.checkpoint_id,
            c.job.job_id()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_lose_their_module_paths() {
        assert_eq!(short_type_name("u64"), "u64");
        assert_eq!(short_type_name("alloc::string::String"), "String");
        assert_eq!(
            short_type_name("(alloc::string::String, u64)"),
            "(String, u64)"
        );
        assert_eq!(
            short_type_name("alloc::vec::Vec<my_job::model::Event>"),
            "Vec<Event>"
        );
        assert_eq!(
            short_type_name("core::option::Option<[u8; 4]>"),
            "Option<[u8; 4]>"
        );
    }

    #[test]
    fn timestamps_read_as_utc_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01 00:00:00.000 UTC");
        // `date -u -d @1796421924` prints 2026-12-04 22:05:24.
        assert_eq!(
            utc_timestamp(1_796_421_924_251),
            "2026-12-04 22:05:24.251 UTC"
        );
    }
}
