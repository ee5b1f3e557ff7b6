//! Checkpoint storage against a real S3-compatible server: `s3s-fs`, started
//! by this test on 127.0.0.1 and killed by PID when it ends (also when it
//! fails). Without the binary the test is skipped with a message, unless
//! `FLOE_REQUIRE_S3=1` (CI) makes that a failure.
//!
//! Install: `cargo install s3s-fs@0.14.1 --features binary`.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use floe_checkpoint::{CheckpointStorage, FileKind, StorageError, StorageKind};

const BUCKET: &str = "test";
const ACCESS_KEY: &str = "testkey";
const SECRET_KEY: &str = "testsecret";

/// `s3s-fs` on PATH, else in `$HOME/.cargo/bin` (where `cargo install` puts it).
fn find_s3s_fs() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("s3s-fs"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let p = PathBuf::from(std::env::var_os("HOME")?).join(".cargo/bin/s3s-fs");
        p.is_file().then_some(p)
    })
}

/// The running server; killing it by PID on drop, so a failed assertion
/// never leaves it behind.
struct S3Server {
    child: Child,
    port: u16,
    root: tempfile::TempDir,
    log: PathBuf,
}

impl S3Server {
    fn start(binary: &Path) -> S3Server {
        let root = tempfile::tempdir().expect("temporary directory for the S3 server");
        std::fs::create_dir_all(root.path().join("data").join(BUCKET)).expect("bucket directory");
        // A free port: bind port 0, note the port, release it for the server.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free local port")
            .port();
        let log = root.path().join("s3s-fs.log");
        let log_file = std::fs::File::create(&log).expect("server log file");
        let child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path().join("data"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("server log file"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        eprintln!("started s3s-fs (pid {}) on 127.0.0.1:{port}", child.id());
        let mut server = S3Server {
            child,
            port,
            root,
            log,
        };
        server.wait_until_ready();
        server
    }

    /// Polls the port until the server accepts connections.
    fn wait_until_ready(&mut self) {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "s3s-fs exited before accepting connections ({status}):\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not accept connections on {addr} within 20 s:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The directory holding the objects of the test bucket.
    fn bucket_dir(&self) -> PathBuf {
        self.root.path().join("data").join(BUCKET)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let pid = self.child.id();
        // `Child::kill` signals exactly this PID; `wait` reaps it.
        if let Err(e) = self.child.kill() {
            eprintln!("could not kill s3s-fs (pid {pid}): {e}");
        }
        let _ = self.child.wait();
    }
}

#[test]
fn s3_storage_against_a_real_server() {
    let required = std::env::var("FLOE_REQUIRE_S3").is_ok_and(|v| v == "1");
    let Some(binary) = find_s3s_fs() else {
        assert!(
            !required,
            "FLOE_REQUIRE_S3=1 but s3s-fs is not installed (on PATH or in $HOME/.cargo/bin); \
             install it with: cargo install s3s-fs@0.14.1 --features binary"
        );
        println!(
            "skipped: s3s-fs not installed (cargo install s3s-fs@0.14.1 --features binary; \
             set FLOE_REQUIRE_S3=1 to make this a failure)"
        );
        return;
    };
    let server = S3Server::start(&binary);
    let endpoint = server.endpoint();
    let vars = [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
    ];
    let url = format!("s3://{BUCKET}/checkpoints");
    let storage = CheckpointStorage::from_url_with_vars(&url, &vars).unwrap();
    assert_eq!(storage.kind(), StorageKind::S3);
    assert_eq!(storage.url(), url);

    // Something beside the checkpoints that discarding must leave alone.
    let job_id = common::fresh_job_id();
    let shared = server
        .bucket_dir()
        .join("checkpoints")
        .join(job_id.to_string())
        .join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("sst-1"), b"keep me").unwrap();

    let used_job = common::exercise_storage(&storage);
    assert_ne!(used_job, job_id);
    common::large_files_read_back_exactly(&storage);

    // The same contract on the job whose shared/ directory exists.
    let job = storage.job(job_id);
    let keyed = job
        .write_state_file(1, "keyed-0", FileKind::KeyedState, b"state")
        .unwrap();
    let meta = common::metadata_listing(1, false, &[&keyed]);
    job.complete_checkpoint(1, &meta).unwrap();
    assert_eq!(job.completed_checkpoints().unwrap(), vec![1]);
    // The objects are where Flink's layout puts them.
    let chk = server
        .bucket_dir()
        .join("checkpoints")
        .join(job_id.to_string())
        .join("chk-1");
    assert!(chk.join("_metadata").is_file(), "{}", chk.display());
    assert!(chk.join("keyed-0").is_file());
    let resolved = CheckpointStorage::resolve_checkpoint_with_vars(
        &format!("{url}/{job_id}/chk-1/_metadata"),
        &vars,
    )
    .unwrap();
    assert_eq!(resolved.checkpoint_id, 1);
    assert_eq!(resolved.job.read_metadata(1).unwrap(), meta);
    let latest =
        CheckpointStorage::resolve_checkpoint_with_vars(&format!("{url}/{job_id}"), &vars).unwrap();
    assert_eq!(latest.checkpoint_id, 1);

    job.discard_checkpoint(1).unwrap();
    assert_eq!(job.completed_checkpoints().unwrap(), Vec::<u64>::new());
    assert_eq!(std::fs::read(shared.join("sst-1")).unwrap(), b"keep me");

    // Many threads against the server at once.
    let job = storage.job(common::fresh_job_id());
    std::thread::scope(|s| {
        for subtask in 0..4 {
            let job = job.clone();
            s.spawn(move || {
                let handle = job
                    .write_state_file(1, &format!("keyed-{subtask}"), FileKind::KeyedState, b"x")
                    .unwrap();
                assert_eq!(
                    job.read_state_file(&handle, FileKind::KeyedState).unwrap(),
                    b"x"
                );
            });
        }
    });

    // Wrong credentials are an error naming the file, not a hang or panic.
    let bad = CheckpointStorage::from_url_with_vars(
        &url,
        &[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", "wrong"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ],
    )
    .unwrap();
    let err = bad
        .job(job_id)
        .write_state_file(2, "keyed-0", FileKind::KeyedState, b"x")
        .unwrap_err();
    assert!(matches!(err, StorageError::Io { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("{url}/{job_id}/chk-2/keyed-0")),
        "{err}"
    );
    drop(server);
}
