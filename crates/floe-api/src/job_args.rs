//! The standard flags every Floe job binary accepts.
//!
//! A job's `main` calls [`JobArgs::from_env`], which takes Floe's own flags
//! out of the command line wherever they appear (before or after the job's
//! arguments) and leaves the rest to the job:
//!
//! - `-p N` / `--parallelism N`: default parallelism;
//! - `--config <file>`: the configuration file (otherwise
//!   `$FLOE_CONF_DIR/floe-conf.yaml`, then `./conf/floe-conf.yaml`);
//! - `-D key=value` (or `-Dkey=value`): one configuration value;
//! - `-s <path>` / `--fromSavepoint <path>` and `-n` /
//!   `--allowNonRestoredState`: restore flags;
//! - `--fromCheckpoint <path>`: start from a retained checkpoint (a job's
//!   checkpoint directory, meaning its latest completed checkpoint, or a
//!   `chk-<n>` directory);
//! - `--` ends Floe's flags; everything after it belongs to the job.
//!
//! Precedence: values set in code > `-p` and `-D` > the file > defaults.

use std::path::{Path, PathBuf};

use floe_core::config::options;
use floe_core::{ConfigError, Configuration};

/// A command-line mistake.
#[derive(Debug, thiserror::Error)]
pub enum JobArgsError {
    /// A flag that needs a value came last.
    #[error("flag {0} needs a value")]
    MissingValue(String),
    /// `-p` with something other than a positive integer.
    #[error("invalid parallelism {0:?}: expected a positive integer")]
    InvalidParallelism(String),
    /// The configuration could not be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A job argument the job requires was not given.
    #[error("missing required argument --{0}")]
    MissingArgument(String),
    /// A job argument whose value does not parse as what the job expects.
    #[error("invalid value {value:?} for --{name}: {reason}")]
    InvalidArgument {
        /// The argument's name, without dashes.
        name: String,
        /// The value given.
        value: String,
        /// What was expected instead.
        reason: String,
    },
}

/// Floe's flags, parsed, and the job's own arguments.
#[derive(Debug, Clone, Default)]
pub struct JobArgs {
    configuration: Configuration,
    config_file: Option<PathBuf>,
    job_args: Vec<String>,
    from_savepoint: Option<String>,
    from_checkpoint: Option<String>,
    allow_non_restored_state: bool,
}

/// A snapshot or directory location as the storage layer takes it: a URL
/// (`scheme:…`) or an absolute path unchanged, a relative path made
/// absolute against the current directory (lexically: `.` segments
/// dropped, `..` applied), which is what a user typing `floe info
/// savepoint-1a2b3c-…` in a shell means. Falls back to `path` unchanged
/// when the current directory is unknown (the storage layer then names the
/// problem).
pub fn absolute_location(path: &str) -> String {
    let trimmed = path.trim();
    let is_url = trimmed.split_once(':').is_some_and(|(scheme, _)| {
        scheme.len() > 1
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    if trimmed.is_empty() || is_url || trimmed.starts_with('/') {
        return path.to_string();
    }
    let Ok(cwd) = std::env::current_dir() else {
        return path.to_string();
    };
    let mut out = PathBuf::new();
    for c in cwd.join(trimmed).components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out.to_string_lossy().into_owned()
}

/// The configuration file name looked up in configuration directories.
pub const CONFIG_FILE_NAME: &str = "floe-conf.yaml";

impl JobArgs {
    /// Parses the process's arguments (without the program name).
    pub fn from_env() -> Result<Self, JobArgsError> {
        Self::parse(std::env::args().skip(1))
    }

    /// Parses `args` (without the program name).
    pub fn parse<I: IntoIterator<Item = S>, S: Into<String>>(
        args: I,
    ) -> Result<Self, JobArgsError> {
        let mut out = JobArgs::default();
        let mut dynamic = Configuration::new();
        let mut config_flag: Option<PathBuf> = None;
        let mut it = args.into_iter().map(Into::into);
        let value_of = |flag: &str, it: &mut dyn Iterator<Item = String>| {
            it.next()
                .ok_or_else(|| JobArgsError::MissingValue(flag.to_string()))
        };
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--" => {
                    out.job_args.extend(it.by_ref());
                    break;
                }
                "-p" | "--parallelism" => {
                    let v = value_of(&arg, &mut it)?;
                    set_parallelism(&mut dynamic, &v)?;
                }
                "--config" => config_flag = Some(PathBuf::from(value_of(&arg, &mut it)?)),
                "-D" => dynamic.set_dynamic_property(&value_of(&arg, &mut it)?)?,
                "-s" | "--fromSavepoint" => out.from_savepoint = Some(value_of(&arg, &mut it)?),
                "-n" | "--allowNonRestoredState" => out.allow_non_restored_state = true,
                "--fromCheckpoint" => out.from_checkpoint = Some(value_of(&arg, &mut it)?),
                a if a.starts_with("--fromCheckpoint=") => {
                    out.from_checkpoint = Some(a["--fromCheckpoint=".len()..].to_string())
                }
                a if a.starts_with("--parallelism=") => set_parallelism(&mut dynamic, &a[14..])?,
                a if a.starts_with("--config=") => config_flag = Some(PathBuf::from(&a[9..])),
                a if a.starts_with("--fromSavepoint=") => {
                    out.from_savepoint = Some(a[16..].to_string())
                }
                a if a.starts_with("-D") && a.len() > 2 => dynamic.set_dynamic_property(&a[2..])?,
                _ => out.job_args.push(arg),
            }
        }
        let file = match config_flag {
            Some(p) => Some(p),
            None => default_config_file(),
        };
        let mut configuration = match &file {
            Some(p) => Configuration::from_yaml_file(p)?,
            None => Configuration::new(),
        };
        configuration.merge(&dynamic);
        out.configuration = configuration;
        out.config_file = file;
        Ok(out)
    }

    /// The configuration from the file, `-D` and `-p`.
    pub fn configuration(&self) -> &Configuration {
        &self.configuration
    }

    /// The configuration file that was read, if any.
    pub fn config_file(&self) -> Option<&Path> {
        self.config_file.as_deref()
    }

    /// The job's own arguments, in order.
    pub fn job_args(&self) -> &[String] {
        &self.job_args
    }

    /// `-s`: the savepoint to restore from.
    pub fn from_savepoint(&self) -> Option<&str> {
        self.from_savepoint.as_deref()
    }

    /// `--fromCheckpoint`: the retained checkpoint to start from.
    pub fn from_checkpoint(&self) -> Option<&str> {
        self.from_checkpoint.as_deref()
    }

    /// `-n`: allow savepoint state that maps to no operator.
    pub fn allow_non_restored_state(&self) -> bool {
        self.allow_non_restored_state
    }

    /// The value of the job argument `--name value` (or `--name=value`,
    /// `-name value`), as Flink's `ParameterTool.fromArgs` reads them;
    /// without one, the configuration value of key `name` (from `-D` or the
    /// file), as a `ParameterTool` merged with the configuration would
    /// answer. A flag given without a value reads as `"true"`; the last
    /// occurrence wins.
    pub fn get(&self, name: &str) -> Option<String> {
        let mut found = None;
        let mut i = 0;
        while i < self.job_args.len() {
            let a = &self.job_args[i];
            let flag = a.strip_prefix("--").or_else(|| a.strip_prefix('-'));
            if let Some(flag) = flag {
                if let Some((k, v)) = flag.split_once('=') {
                    if k == name {
                        found = Some(v.to_string());
                    }
                } else if flag == name {
                    let next = self.job_args.get(i + 1);
                    match next {
                        Some(v) if !is_flag(v) => {
                            found = Some(v.clone());
                            i += 1;
                        }
                        _ => found = Some("true".to_string()),
                    }
                }
            }
            i += 1;
        }
        found.or_else(|| self.configuration.get_raw(name).map(str::to_string))
    }

    /// Whether the job argument (or configuration key) `name` is given.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// [`Self::get`], or `default`.
    pub fn get_or(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_string())
    }

    /// [`Self::get`], or an error naming the missing argument.
    pub fn get_required(&self, name: &str) -> Result<String, JobArgsError> {
        self.get(name)
            .ok_or_else(|| JobArgsError::MissingArgument(name.to_string()))
    }

    /// The argument parsed as `T` (numbers, booleans, anything `FromStr`),
    /// `None` if absent, an error naming the argument and its value if it
    /// does not parse.
    pub fn get_parsed<T>(&self, name: &str) -> Result<Option<T>, JobArgsError>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        self.get(name)
            .map(|v| {
                v.trim()
                    .parse::<T>()
                    .map_err(|e| JobArgsError::InvalidArgument {
                        name: name.to_string(),
                        value: v.clone(),
                        reason: e.to_string(),
                    })
            })
            .transpose()
    }

    /// [`Self::get_parsed`] with a default for an absent argument.
    pub fn get_parsed_or<T>(&self, name: &str, default: T) -> Result<T, JobArgsError>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        Ok(self.get_parsed(name)?.unwrap_or(default))
    }

    /// The argument as a duration in Flink's notation (`500ms`, `10 s`,
    /// `1min`), `None` if absent.
    pub fn get_duration(&self, name: &str) -> Result<Option<std::time::Duration>, JobArgsError> {
        self.get(name)
            .map(|v| {
                floe_core::config::parse_duration_value(&v).map_err(|reason| {
                    JobArgsError::InvalidArgument {
                        name: name.to_string(),
                        value: v.clone(),
                        reason,
                    }
                })
            })
            .transpose()
    }
}

/// Whether a job argument is a flag rather than a value (`-5` is a value).
fn is_flag(a: &str) -> bool {
    a.starts_with('-')
        && a.len() > 1
        && !a[1..].starts_with(|c: char| c.is_ascii_digit() || c == '.')
}

fn set_parallelism(c: &mut Configuration, v: &str) -> Result<(), JobArgsError> {
    match v.trim().parse::<u32>() {
        Ok(p) if p > 0 => {
            c.set(options::PARALLELISM.key, p.to_string());
            Ok(())
        }
        _ => Err(JobArgsError::InvalidParallelism(v.to_string())),
    }
}

fn default_config_file() -> Option<PathBuf> {
    let from_env =
        std::env::var_os("FLOE_CONF_DIR").map(|d| PathBuf::from(d).join(CONFIG_FILE_NAME));
    let local = PathBuf::from("conf").join(CONFIG_FILE_NAME);
    match from_env {
        // An explicitly named directory must hold the file.
        Some(p) => Some(p),
        None => local.is_file().then_some(local),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_getters_read_job_arguments_and_fall_back_to_configuration() {
        let a = JobArgs::parse([
            "--input",
            "in.txt",
            "--rate=2.5",
            "--records",
            "1000",
            "--verbose",
            "--offset",
            "-5",
            "--window",
            "10 s",
            "-Dsink.topic=out",
            "--records",
            "2000",
        ])
        .unwrap();
        assert_eq!(a.get("input").as_deref(), Some("in.txt"));
        assert_eq!(a.get_or("output", "stdout"), "stdout");
        assert!(a.has("verbose") && !a.has("quiet"));
        assert_eq!(a.get_parsed::<bool>("verbose").unwrap(), Some(true));
        assert_eq!(a.get_parsed::<f64>("rate").unwrap(), Some(2.5));
        // The last occurrence wins, as in ParameterTool.
        assert_eq!(a.get_parsed::<u64>("records").unwrap(), Some(2000));
        assert_eq!(a.get_parsed::<i64>("offset").unwrap(), Some(-5));
        assert_eq!(a.get_parsed_or::<u64>("keys", 7).unwrap(), 7);
        assert_eq!(
            a.get_duration("window").unwrap(),
            Some(std::time::Duration::from_secs(10))
        );
        // Not an argument: the configuration answers.
        assert_eq!(a.get("sink.topic").as_deref(), Some("out"));

        let e = a.get_required("output").unwrap_err().to_string();
        assert_eq!(e, "missing required argument --output");
        let e = a.get_parsed::<u64>("input").unwrap_err().to_string();
        assert!(
            e.starts_with("invalid value \"in.txt\" for --input: "),
            "{e}"
        );
        let e = a.get_duration("input").unwrap_err().to_string();
        assert!(e.contains("--input"), "{e}");
    }

    #[test]
    fn flags_before_and_after_job_args() {
        let a = JobArgs::parse([
            "-p",
            "4",
            "--input",
            "f.txt",
            "-Dfoo.bar=1",
            "--output",
            "o",
            "-D",
            "x=y",
        ])
        .unwrap();
        assert_eq!(a.job_args(), ["--input", "f.txt", "--output", "o"]);
        assert_eq!(
            a.configuration().get(&options::PARALLELISM).unwrap(),
            Some(4)
        );
        assert_eq!(a.configuration().get_raw("foo.bar"), Some("1"));
        assert_eq!(a.configuration().get_raw("x"), Some("y"));
        let b = JobArgs::parse(["--records", "10", "--parallelism=2", "-s", "/sp", "-n"]).unwrap();
        assert_eq!(b.job_args(), ["--records", "10"]);
        assert_eq!(b.from_savepoint(), Some("/sp"));
        assert!(b.allow_non_restored_state());
    }

    #[test]
    fn double_dash_passes_everything_through() {
        let a = JobArgs::parse(["--", "-p", "3"]).unwrap();
        assert_eq!(a.job_args(), ["-p", "3"]);
    }

    #[test]
    fn bad_flags_are_clear_errors() {
        assert!(matches!(JobArgs::parse(["-p"]), Err(JobArgsError::MissingValue(f)) if f == "-p"));
        assert!(matches!(
            JobArgs::parse(["-p", "zero"]),
            Err(JobArgsError::InvalidParallelism(_))
        ));
        assert!(matches!(
            JobArgs::parse(["-p", "0"]),
            Err(JobArgsError::InvalidParallelism(_))
        ));
        assert!(JobArgs::parse(["-D", "novalue"]).is_err());
        let e = JobArgs::parse(["--config", "/no/such/floe-conf.yaml"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("/no/such/floe-conf.yaml"), "{e}");
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = std::env::temp_dir().join(format!("floe-jobargs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.yaml");
        std::fs::write(
            &f,
            "parallelism.default: 3\npipeline.max-parallelism: 256\n",
        )
        .unwrap();
        let a = JobArgs::parse(["--config", f.to_str().unwrap(), "-p", "2"]).unwrap();
        assert_eq!(
            a.configuration().get(&options::PARALLELISM).unwrap(),
            Some(2)
        );
        assert_eq!(
            a.configuration().get(&options::MAX_PARALLELISM).unwrap(),
            Some(256)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn relative_locations_are_made_absolute_and_urls_kept() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            absolute_location("sp/savepoint-1"),
            cwd.join("sp/savepoint-1").to_string_lossy()
        );
        assert_eq!(
            absolute_location("./a/../b/./c"),
            cwd.join("b/c").to_string_lossy()
        );
        for kept in ["/abs/sp", "file:///x", "s3://b/p", "file:rel", ""] {
            assert_eq!(absolute_location(kept), kept);
        }
    }
}
