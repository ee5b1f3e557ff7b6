//! What a storage location may say, checked before it is parsed.
//!
//! Both the configuration (which names the key a bad value came from) and
//! the storage (which refuses the URL whoever passed it) apply these rules,
//! so they live apart from either.

/// The `state.checkpoints.dir` value that keeps checkpoints in the
/// JobManager's memory (Flink's `jobmanager` checkpoint storage).
pub const JOBMANAGER_STORAGE: &str = "jobmanager";

/// Checks what a storage URL says before it is parsed, because the URL
/// parser quietly repairs what a user most likely mistyped: `file:relative`
/// parses as `file:///relative`, so checkpoints would land in a directory at
/// the file-system root. Returns the reason a URL is refused.
pub(crate) fn check_url_syntax(url: &str) -> Result<(), &'static str> {
    let given = url.trim();
    if given.is_empty() {
        return Err("it is empty");
    }
    if given.eq_ignore_ascii_case(JOBMANAGER_STORAGE) {
        return Ok(());
    }
    let Some((scheme, rest)) = given.split_once(':') else {
        return Err(if given.starts_with('/') {
            "a path needs the file:// scheme (file:///absolute/path)"
        } else {
            "a relative path is not allowed (give a URL such as file:///absolute/path)"
        });
    };
    if scheme.eq_ignore_ascii_case("file") {
        if !rest.starts_with('/') {
            return Err(
                "a file URL must hold an absolute path (file:///absolute/path); a relative one would be read from the file-system root",
            );
        }
        let path = rest
            .strip_prefix("//localhost")
            .or_else(|| rest.strip_prefix("//"))
            .unwrap_or(rest);
        if path.trim_matches('/').is_empty() {
            return Err("a file URL must name a directory, not the file-system root");
        }
    } else if !rest.starts_with("//") {
        return Err("a URL needs '://' after its scheme (s3://bucket/prefix)");
    }
    Ok(())
}
