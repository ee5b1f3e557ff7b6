//! What RocksDB's own OPTIONS file says about a database's column families.
//!
//! A column family's `inplace_update_support` is fixed when it is opened,
//! but Floe chooses it per state (see [`crate::WritePattern`]), and a
//! restored or reopened database opens its column families before the job
//! says which state each one holds. RocksDB writes every column family's
//! options into `OPTIONS-<n>` beside its files (and incremental checkpoints
//! carry that file), so the choice made when a state's column family was
//! created is read back from there. The file is RocksDB's stable INI-like
//! format: a `[CFOptions "<name>"]` section per column family (special
//! characters of the name, such as `:`, escaped with `\`) with one
//! `key=value` option per line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::resources::WritePattern;

/// The newest `OPTIONS-<n>` file in `dir`, if any.
fn latest_options_file(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let n: u64 = name.to_str()?.strip_prefix("OPTIONS-")?.parse().ok()?;
            Some((n, e.path()))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, p)| p)
}

/// Each column family's write pattern as the newest OPTIONS file in `dir`
/// records it. Empty when there is no such file or it cannot be read: the
/// caller then falls back to the default, which only costs speed.
pub(crate) fn write_patterns(dir: &Path) -> HashMap<String, WritePattern> {
    latest_options_file(dir)
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|text| parse_write_patterns(&text))
        .unwrap_or_default()
}

/// The `inplace_update_support` of every `[CFOptions "<name>"]` section.
fn parse_write_patterns(text: &str) -> HashMap<String, WritePattern> {
    let mut patterns = HashMap::new();
    let mut section: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line
                .strip_prefix("[CFOptions \"")
                .and_then(|rest| rest.strip_suffix("\"]"))
                .map(unescape);
            continue;
        }
        let (Some(cf), Some(value)) = (&section, line.strip_prefix("inplace_update_support="))
        else {
            continue;
        };
        match value.trim() {
            "true" => patterns.insert(cf.clone(), WritePattern::from_in_place(true)),
            "false" => patterns.insert(cf.clone(), WritePattern::from_in_place(false)),
            _ => None,
        };
    }
    patterns
}

/// A name as RocksDB escapes it in an OPTIONS file, unescaped: a `\`
/// stands for the character after it.
fn unescape(escaped: &str) -> String {
    let mut out = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sections_in_place_flag_is_read() {
        let text = "\
[Version]
  rocksdb_version=11.8.1
[DBOptions]
  inplace_update_support=true
[CFOptions \"default\"]
  inplace_update_support=false
[CFOptions \"s\\:window-contents\"]
  max_write_buffer_number=2
  inplace_update_support=true
[TableOptions/BlockBasedTable \"s:window-contents\"]
  inplace_update_support=false
[CFOptions \"s\\:count\"]
  inplace_update_support=false
[CFOptions \"s:odd\"]
  inplace_update_support=maybe
";
        let p = parse_write_patterns(text);
        assert_eq!(
            p.get("s:window-contents"),
            Some(&WritePattern::WriteThrough)
        );
        assert_eq!(p.get("s:count"), Some(&WritePattern::WriteBack));
        assert_eq!(p.get("default"), Some(&WritePattern::WriteBack));
        assert_eq!(p.get("s:odd"), None);
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn the_newest_file_wins_and_none_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_patterns(dir.path()).is_empty());
        let file = |n: u32, flag: &str| {
            std::fs::write(
                dir.path().join(format!("OPTIONS-{n:06}")),
                format!("[CFOptions \"s:a\"]\n  inplace_update_support={flag}\n"),
            )
            .unwrap()
        };
        file(7, "true");
        file(12, "false");
        std::fs::write(dir.path().join("OPTIONS-000012.dbtmp"), "garbage").unwrap();
        assert_eq!(
            write_patterns(dir.path()).get("s:a"),
            Some(&WritePattern::WriteBack)
        );
    }
}
