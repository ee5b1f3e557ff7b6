//! A real S3-compatible server for the cluster tests: `s3s-fs` (objects as
//! files; `.ci/run` installs it and sets `FLOE_REQUIRE_S3=1`), on an
//! address of the test's choosing, killed when dropped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BUCKET: &str = "floe";

/// A running server.
pub struct S3Server {
    child: Child,
    addr: SocketAddr,
    _root: tempfile::TempDir,
}

impl S3Server {
    /// `s3s-fs` on `host`, or why not (not installed).
    pub fn start(host: &str) -> Result<S3Server, String> {
        let binary = std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("s3s-fs"))
                    .find(|p| p.is_file())
            })
            .or_else(|| {
                let p = PathBuf::from(std::env::var_os("HOME")?).join(".cargo/bin/s3s-fs");
                p.is_file().then_some(p)
            })
            .ok_or("s3s-fs is not installed (cargo install s3s-fs --features binary)")?;
        let root = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::create_dir_all(root.path().join(BUCKET)).map_err(|e| e.to_string())?;
        let addr = TcpListener::bind((host, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port on {host}: {e}"))?;
        let child = Command::new(&binary)
            .args(["--host", host, "--port", &addr.port().to_string()])
            .args(["--access-key", "floekey", "--secret-key", "floesecret"])
            .arg(root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let server = S3Server {
            child,
            addr,
            _root: root,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("s3s-fs did not listen on {addr} within 20 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// Where the objects are kept, one directory per bucket.
    #[allow(dead_code)]
    pub fn root(&self) -> &std::path::Path {
        self._root.path()
    }

    /// `s3s-fs` on 127.0.0.1 for `sandbox`'s commands, which get its
    /// credentials; `None` (said on stderr) when it is not installed and
    /// `FLOE_REQUIRE_S3` is unset (`.ci/run` sets it).
    #[allow(dead_code)]
    pub fn for_sandbox(sandbox: &super::Sandbox) -> Option<S3Server> {
        match S3Server::start("127.0.0.1") {
            Ok(s3) => {
                sandbox.add_env(s3.env());
                Some(s3)
            }
            Err(why) if std::env::var_os("FLOE_REQUIRE_S3").is_none() => {
                eprintln!("no S3 server, checkpoints go to a local directory: {why}");
                None
            }
            Err(why) => panic!("FLOE_REQUIRE_S3 is set and: {why}"),
        }
    }

    /// What a process needs in its environment to use the server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "floekey".into()),
            ("AWS_SECRET_ACCESS_KEY", "floesecret".into()),
            ("AWS_ENDPOINT", format!("http://{}", self.addr)),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
