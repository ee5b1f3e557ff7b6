//! The web dashboard in a real headless Chromium, driven over WebDriver
//! (chromedriver, through `fantoccini`), against jobs running in this
//! process and serving their REST endpoint: the page lists the job, draws
//! its real operators with rates that grow, shows a checkpoint once one
//! completed, its savepoint button produces a savepoint on disk whose path
//! it shows, its cancel button ends the job, its exception history shows a
//! failure the job restarted from, a back-pressured operator is colored, and
//! a checkpoint held up behind a slow sink shows which operators have
//! acknowledged it and which not yet.
//!
//! Chromium and chromedriver are Debian's (`/usr/bin/chromium`,
//! `/usr/bin/chromedriver`). Without them the browser tests skip with a
//! message, unless `FLOE_REQUIRE_BROWSER=1` (CI) makes that a failure.
//! Screenshots go to `target/…/dashboard-screenshots/`, and with
//! `FLOE_UPDATE_SCREENSHOTS=1` to `docs/images/` (the ones the monitoring
//! guide shows), so an ordinary test run leaves the work tree clean.
//!
//! Every wait polls with a generous deadline: on a loaded two-core machine
//! a page, a rate window or a checkpoint may take seconds.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{RunningCount, with_timeout};
use fantoccini::{Client, ClientBuilder, Locator};
use floe::prelude::*;
use floe::rest::{JobDirectory, RestAuth, RestServer};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Longest wait for anything the page should come to show.
const PATIENCE: Duration = Duration::from_secs(60);

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into()
}

fn get_json(url: &str) -> Value {
    let text = agent()
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {text}"))
}

/// Whether the browser can run here: false (skip) when Chromium or
/// chromedriver is missing, a panic when CI requires them.
fn browser_available() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "{} not installed (apt-get install chromium chromium-driver)",
        missing.join(" and ")
    );
    if std::env::var("FLOE_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
        panic!("FLOE_REQUIRE_BROWSER=1 but {message}");
    }
    eprintln!("SKIPPED: the dashboard's browser test needs Chromium: {message}");
    false
}

/// A free local port (bound and released; chromedriver takes it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A chromedriver process and one headless Chromium session, with blocking
/// helpers over fantoccini's async API. Dropping it ends the session and
/// kills chromedriver by its pid.
struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let profile = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(profile.path().join("chromedriver.log")).unwrap();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start chromedriver");
        let mut browser = Browser {
            runtime,
            client: None,
            driver,
            _profile: profile,
        };
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let ready = agent()
                .get(&format!("{base}/status"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not come up on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let user_data = browser._profile.path().join("chromium");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--disable-dev-shm-usage",
                    "--hide-scrollbars",
                    "--window-size=1440,1000",
                    format!("--user-data-dir={}", user_data.display()),
                ],
            },
        });
        let caps = match caps {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        let client = browser
            .runtime
            .block_on(
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&base),
            )
            .unwrap_or_else(|e| panic!("no Chromium session: {e}"));
        browser.client = Some(client);
        browser
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("a session")
    }

    fn goto(&self, url: &str) {
        self.runtime
            .block_on(self.client().goto(url))
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Runs `script` (a function body; `return` a value) in the page.
    fn js(&self, script: &str) -> Value {
        self.runtime
            .block_on(self.client().execute(script, vec![]))
            .unwrap_or_else(|e| panic!("script failed ({e}): {script}"))
    }

    /// Polls `probe` until it returns `Some`, or fails after [`PATIENCE`]
    /// saying what was awaited and what the page showed last.
    fn wait_for<T>(&self, what: &str, mut probe: impl FnMut(&Browser) -> Option<T>) -> T {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(v) = probe(self) {
                return v;
            }
            if Instant::now() > deadline {
                let shown = self.js("return document.body ? document.body.innerText : ''");
                panic!(
                    "the dashboard did not show {what} within {PATIENCE:?}; it showed:\n{}",
                    shown.as_str().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn click(&self, css: &str) {
        self.runtime
            .block_on(async { self.client().find(Locator::Css(css)).await?.click().await })
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    fn resize(&self, width: u32, height: u32) {
        self.runtime
            .block_on(self.client().set_window_size(width, height))
            .unwrap_or_else(|e| panic!("resize to {width}x{height}: {e}"));
    }

    /// A PNG of the viewport (1440×1000), or of the element `css` names
    /// (taken in a window tall enough to hold it whole).
    fn screenshot(&self, css: Option<&str>, name: &str) {
        let png = self
            .runtime
            .block_on(async {
                let client = self.client();
                match css {
                    None => client.screenshot().await,
                    Some(css) => {
                        client.set_window_size(1440, 2600).await?;
                        let e = client.find(Locator::Css(css)).await?;
                        let png = e.screenshot().await;
                        client.set_window_size(1440, 1000).await?;
                        png
                    }
                }
            })
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        assert!(png.starts_with(b"\x89PNG"), "{name} is not a PNG");
        for dir in screenshot_dirs() {
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(name);
            std::fs::write(&path, &png).unwrap();
            eprintln!("screenshot: {}", path.display());
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(client.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where screenshots are written: always under the target directory, and
/// into `docs/images/` when `FLOE_UPDATE_SCREENSHOTS=1`.
fn screenshot_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots")];
    if std::env::var("FLOE_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        dirs.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/images"));
    }
    dirs
}

/// Fails the first run once, after it has seen some records, so that the
/// job restarts and its exception history has an entry; discards records.
#[derive(Clone)]
struct FailOnceSink {
    seen: u64,
}

static FAILED_ONCE: AtomicBool = AtomicBool::new(false);

impl SinkWriter<(u64, u64)> for FailOnceSink {
    fn write(&mut self, _: (u64, u64)) -> anyhow::Result<()> {
        self.seen += 1;
        Ok(())
    }

    fn write_batch(&mut self, batch: &mut Vec<(u64, u64)>) -> anyhow::Result<()> {
        self.seen += batch.len() as u64;
        batch.clear();
        if self.seen > 3_000 && !FAILED_ONCE.swap(true, Ordering::SeqCst) {
            anyhow::bail!("deliberate failure: the dashboard must list it");
        }
        Ok(())
    }
}

/// The numeric value of a `data-*` attribute of the graph box of `vertex`.
fn node_number(b: &Browser, vertex: &str, attribute: &str) -> Option<f64> {
    let v = b.js(&format!(
        "const n = document.querySelector('.node[data-vertex=\"{vertex}\"]'); \
         return n ? n.getAttribute('{attribute}') : null;"
    ));
    v.as_str().and_then(|s| s.parse().ok())
}

#[test]
fn the_dashboard_shows_a_running_job_and_controls_it() {
    if !browser_available() {
        return;
    }
    with_timeout(600, || {
        let dir = tempfile::tempdir().unwrap();
        let savepoints = dir.path().join("savepoints");
        let env = StreamEnvironment::new();
        env.set_parallelism(2);
        env.enable_checkpointing(Duration::from_millis(800));
        env.set_config(
            "state.checkpoints.dir",
            &format!("file://{}", dir.path().join("checkpoints").display()),
        );
        env.set_config(
            "state.savepoints.dir",
            &format!("file://{}", savepoints.display()),
        );
        env.set_config("restart-strategy.type", "fixed-delay");
        env.set_config("restart-strategy.fixed-delay.attempts", "3");
        env.set_config("restart-strategy.fixed-delay.delay", "200ms");
        env.set_config("rest.auth.token", "dashboard-secret");
        env.from_source(
            GeneratorSource::new(u64::MAX, |i| (i % 101, 1u64)).with_rate(20_000.0),
            "Generator",
        )
        .uid("generator")
        .key_by(|(k, _): &(u64, u64)| *k)
        .process(RunningCount::default())
        .name("Count")
        .uid("count")
        .sink_to(FailOnceSink { seen: 0 }, "Discard")
        .uid("discard");
        let client = env.execute_async("dashboard").unwrap();
        let control = client.control();
        // Supervision (restarts, the exception history) runs in `wait`.
        let waiter = std::thread::spawn(move || client.wait());
        let server =
            RestServer::start(control.clone(), "127.0.0.1", 0, RestAuth::default()).unwrap();
        let base = format!("http://{}", server.local_addr());
        let job_id = control.job_id().to_string();
        let browser = Browser::start();
        browser.goto(&format!("{base}/"));

        // The job list names the job, and the header its status.
        let name = browser.wait_for("the job in the job list", |b| {
            let v = b.js(&format!(
                "const r = document.querySelector('#jobs-table tr[data-job-id=\"{job_id}\"]'); \
                 return r ? r.querySelector('.job-name').textContent : null;"
            ));
            v.as_str().map(str::to_string)
        });
        assert_eq!(name, "dashboard");

        // The graph shows the job's real operators, by the plan's uids and
        // names, and the edges' partitioning.
        let plan = get_json(&format!("{base}/jobs/{job_id}/plan"));
        let plan_nodes = plan["plan"]["nodes"].as_array().unwrap().clone();
        browser.wait_for("every operator of the plan", |b| {
            let shown = b.js("return [...document.querySelectorAll('.node')].map(n => \
                 [n.dataset.vertex, n.querySelector('.node-name').textContent]);");
            let expected: Vec<Value> = plan_nodes
                .iter()
                .map(|n| json!([n["id"], n["description"]]))
                .collect();
            (shown.as_array() == Some(&expected)).then_some(())
        });
        let uids: Vec<&str> = plan_nodes
            .iter()
            .map(|n| n["id"].as_str().unwrap())
            .collect();
        assert!(
            uids.contains(&"generator") && uids.contains(&"count") && uids.contains(&"discard"),
            "{uids:?}"
        );
        let edges = browser.js("return [...document.querySelectorAll('.edge')].map(e => \
             [e.dataset.from, e.dataset.to, e.dataset.shipStrategy]);");
        assert!(
            edges
                .as_array()
                .unwrap()
                .contains(&json!(["generator", "count", "HASH"])),
            "{edges}"
        );

        // Records/s of the keyed operator: positive, and its record count
        // grows from one refresh to a later one.
        let first = browser.wait_for("a records/s rate on the Count box", |b| {
            let rate = node_number(b, "count", "data-records-in-rate")?;
            let total = node_number(b, "count", "data-records-in")?;
            (rate > 0.0 && total > 0.0).then_some(total)
        });
        browser.wait_for("the Count box's record count growing", |b| {
            let total = node_number(b, "count", "data-records-in")?;
            (total > first).then_some(())
        });
        let rate_text = browser.js(
            "return document.querySelector('.node[data-vertex=\"count\"] [data-stat=\"in-rate\"]').textContent;",
        );
        assert!(rate_text.as_str().unwrap().ends_with("/s"), "{rate_text}");

        // The failure the sink raised once is in the exception history, as
        // one the job restarted from.
        browser.wait_for("the failure in the exception history", |b| {
            let v = b.js(
                "const e = document.querySelector('#exceptions .exception'); \
                 return e ? e.textContent : null;",
            );
            let text = v.as_str()?.to_string();
            (text.contains("deliberate failure") && text.contains("restarted")).then_some(())
        });

        // A checkpoint completes and appears in the history table and chart.
        let shown_id = browser.wait_for("a completed checkpoint in the history", |b| {
            let v = b.js(
                "const r = document.querySelector('#checkpoint-history tr[data-status=\"COMPLETED\"]'); \
                 return r ? Number(r.dataset.checkpointId) : null;",
            );
            v.as_u64()
        });
        let history = get_json(&format!("{base}/jobs/{job_id}/checkpoints"));
        let known: Vec<u64> = history["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_u64().unwrap())
            .collect();
        assert!(
            known.contains(&shown_id),
            "checkpoint {shown_id} is not in the REST history {known:?}"
        );
        browser.wait_for("the checkpoint in the chart", |b| {
            let bars = b.js("return document.querySelectorAll('#checkpoint-chart .bar').length;");
            (bars.as_u64()? >= 1).then_some(())
        });
        // The state size of the keyed operator comes from that history.
        browser.wait_for("the Count box's state size", |b| {
            let v = b.js(
                "return document.querySelector('.node[data-vertex=\"count\"] [data-stat=\"state\"]').textContent;",
            );
            let text = v.as_str()?.to_string();
            (text.ends_with('B') && !text.starts_with('—')).then_some(())
        });

        // The configuration in effect is listed, the token masked.
        browser.wait_for("the configuration", |b| {
            let v = b.js(
                "const r = k => { const e = document.querySelector(`#config-table tr[data-key=\"${k}\"] td:last-child`); return e ? e.textContent : null; }; \
                 return [r('execution.checkpointing.interval'), r('rest.auth.token')];",
            );
            (v == json!(["800ms", "******"])).then_some(())
        });
        let page = browser.js("return document.documentElement.outerHTML;");
        assert!(
            !page.as_str().unwrap().contains("dashboard-secret"),
            "the page shows the REST token"
        );

        // A few seconds of history in the chart, then the screenshots.
        browser.wait_for("three checkpoints in the chart", |b| {
            let bars = b.js("return document.querySelectorAll('#checkpoint-chart .bar').length;");
            (bars.as_u64()? >= 3).then_some(())
        });
        browser.screenshot(None, "dashboard-overview.png");
        browser.screenshot(Some("#graph-card"), "dashboard-graph.png");
        browser.screenshot(Some("#checkpoints-card"), "dashboard-checkpoints.png");
        browser.screenshot(Some("#exceptions-card"), "dashboard-exceptions.png");
        browser.screenshot(Some("#config-card"), "dashboard-config.png");

        // "Trigger savepoint" (into state.savepoints.dir, which the page
        // filled in) shows the savepoint's path, which exists on disk.
        browser.click("#btn-savepoint");
        let location = browser.wait_for("the savepoint's path", |b| {
            let v = b.js("const r = document.getElementById('action-result'); \
                 const p = document.getElementById('savepoint-path'); \
                 return [r.dataset.state, p ? p.textContent : null, r.textContent];");
            assert_ne!(v[0], "failed", "the savepoint failed: {}", v[2]);
            (v[0] == "completed").then(|| v[1].as_str().unwrap().to_string())
        });
        let local = PathBuf::from(
            location
                .strip_prefix("file://")
                .unwrap_or_else(|| panic!("not a local savepoint: {location}")),
        );
        assert!(
            local.starts_with(&savepoints),
            "{location} is not under {}",
            savepoints.display()
        );
        assert!(
            local.join("_metadata").is_file(),
            "no _metadata in {}",
            local.display()
        );
        let latest = get_json(&format!("{base}/jobs/{job_id}/checkpoints"));
        assert_eq!(latest["latest"]["savepoint"]["external_path"], location);
        browser.screenshot(Some("#actions-card"), "dashboard-savepoint.png");

        // On a phone-sized screen the panels stack and the page does not
        // scroll sideways (the graph scrolls inside its own panel).
        browser.resize(420, 900);
        browser.wait_for("a one-column layout without sideways scrolling", |b| {
            let v = b.js(
                "const r = id => document.getElementById(id).getBoundingClientRect(); \
                 return [document.documentElement.scrollWidth <= window.innerWidth, \
                         r('config-card').top > r('exceptions-card').bottom];",
            );
            (v == json!([true, true])).then_some(())
        });
        browser.screenshot(None, "dashboard-narrow.png");
        browser.resize(1440, 1000);

        // "Cancel job" asks for a second click, then ends the job.
        browser.click("#btn-cancel");
        browser.wait_for("the cancel button asking to confirm", |b| {
            let v = b.js(
                "return document.getElementById('btn-cancel').classList.contains('confirming');",
            );
            (v == true).then_some(())
        });
        assert_eq!(
            control.status(),
            JobStatus::Running,
            "one click cancels nothing"
        );
        browser.click("#btn-cancel");
        let result = waiter.join().unwrap();
        assert!(
            matches!(result, Err(floe::runtime::JobError::Cancelled { .. })),
            "{result:?}"
        );
        browser.wait_for("the job CANCELED", |b| {
            let v = b.js("return document.getElementById('job-status').dataset.status;");
            (v == "CANCELED").then_some(())
        });

        // Dark mode by the toggle (auto → light → dark), kept in storage.
        browser.click("#theme-toggle");
        browser.click("#theme-toggle");
        let theme = browser.js("return document.documentElement.dataset.theme;");
        assert_eq!(theme, "dark");
        let background = browser.js("return getComputedStyle(document.body).backgroundColor;");
        assert_eq!(background, "rgb(13, 17, 23)", "dark background");
        browser.screenshot(None, "dashboard-dark.png");
        drop(browser);
        drop(server);
    });
}

/// Sleeps this long per batch: its upstream can only wait on a full
/// channel, and a barrier queued behind the channel's batches waits with it.
#[derive(Clone)]
struct SlowSink(Duration);

impl SinkWriter<u64> for SlowSink {
    fn write(&mut self, _: u64) -> anyhow::Result<()> {
        std::thread::sleep(self.0);
        Ok(())
    }

    fn write_batch(&mut self, batch: &mut Vec<u64>) -> anyhow::Result<()> {
        std::thread::sleep(self.0);
        batch.clear();
        Ok(())
    }
}

#[test]
fn the_dashboard_colors_a_back_pressured_operator() {
    if !browser_available() {
        return;
    }
    with_timeout(300, || {
        let env = StreamEnvironment::new();
        env.set_parallelism(1);
        env.from_source(GeneratorSource::new(u64::MAX, |i| i), "Fast source")
            .uid("fast")
            .rebalance()
            .sink_to(SlowSink(Duration::from_millis(20)), "Slow sink")
            .uid("slow");
        let client = env.execute_async("backpressure").unwrap();
        let control = client.control();
        let waiter = std::thread::spawn(move || client.wait());
        let server =
            RestServer::start(control.clone(), "127.0.0.1", 0, RestAuth::default()).unwrap();
        let base = format!("http://{}", server.local_addr());
        let job = format!("{base}/jobs/{}", control.job_id());

        // The REST value first: the fast source spends nearly every
        // millisecond blocked on the slow sink's full channel.
        let deadline = Instant::now() + PATIENCE;
        let bp = loop {
            let m = get_json(&format!(
                "{job}/vertices/fast/metrics?get=0.backPressuredTimeMsPerSecond"
            ));
            let bp: f64 = m[0]["value"].as_str().unwrap().parse().unwrap();
            if bp >= 850.0 {
                break bp;
            }
            assert!(
                Instant::now() < deadline,
                "fast source back-pressured only {bp} ms/s"
            );
            std::thread::sleep(Duration::from_millis(500));
        };
        assert!(bp <= 1000.0, "{bp}");

        let browser = Browser::start();
        browser.goto(&format!("{base}/"));
        // The page colors the source as back-pressured (Flink's "high"
        // level, above 50 %) and the sink as busy, not back-pressured.
        browser.wait_for("the source colored as back-pressured", |b| {
            let v = b.js(
                "const f = document.querySelector('.node[data-vertex=\"fast\"]'); \
                 const s = document.querySelector('.node[data-vertex=\"slow\"]'); \
                 if (!f || !s) return null; \
                 return [f.classList.contains('bp-high'), f.dataset.backpressureLevel, \
                         s.classList.contains('bp-ok'), s.dataset.busyLevel, \
                         parseFloat(getComputedStyle(f).borderTopWidth) > \
                         parseFloat(getComputedStyle(s).borderTopWidth)];",
            );
            (v == json!([true, "high", true, "high", true])).then_some(())
        });
        let shown = node_number(&browser, "fast", "data-backpressured-ms-per-second").unwrap();
        assert!(shown >= 500.0, "the page shows {shown} ms/s back-pressured");
        let badge = browser.js(
            "return document.querySelector('.node[data-vertex=\"fast\"] .node-badge').textContent;",
        );
        assert_eq!(badge, "BACKPRESSURE HIGH");
        browser.screenshot(Some("#graph-card"), "dashboard-backpressure.png");
        drop(browser);
        control.cancel();
        let _ = waiter.join().unwrap();
        drop(server);
    });
}

#[test]
fn the_dashboard_shows_which_operators_acknowledged_a_checkpoint_in_flight() {
    if !browser_available() {
        return;
    }
    with_timeout(300, || {
        let dir = tempfile::tempdir().unwrap();
        let env = StreamEnvironment::new();
        env.set_parallelism(1);
        env.enable_checkpointing(Duration::from_secs(1));
        env.set_config("execution.checkpointing.timeout", "10 min");
        env.set_config(
            "state.checkpoints.dir",
            &format!("file://{}", dir.path().display()),
        );
        // Each barrier queues behind a full channel of batches the sink
        // takes 400 ms each for: the source acknowledges at once, the
        // sink seconds later.
        env.from_source(GeneratorSource::new(u64::MAX, |i| i), "Fast source")
            .uid("fast")
            .rebalance()
            .sink_to(SlowSink(Duration::from_millis(400)), "Slow sink")
            .uid("slow");
        let client = env.execute_async("in-flight").unwrap();
        let control = client.control();
        let waiter = std::thread::spawn(move || client.wait());
        let server =
            RestServer::start(control.clone(), "127.0.0.1", 0, RestAuth::default()).unwrap();
        let base = format!("http://{}", server.local_addr());
        let job = format!("{base}/jobs/{}", control.job_id());

        // REST: a checkpoint in flight, acknowledged by the source only.
        let deadline = Instant::now() + PATIENCE;
        let id = loop {
            let cp = get_json(&format!("{job}/checkpoints"));
            let first = &cp["history"][0];
            if first["status"] == "IN_PROGRESS"
                && first["tasks"]["fast"]["num_acknowledged_subtasks"] == 1
                && first["tasks"]["slow"]["num_acknowledged_subtasks"] == 0
            {
                assert_eq!(cp["counts"]["in_progress"], 1, "{cp}");
                assert_eq!(first["tasks"]["slow"]["num_subtasks"], 1);
                break first["id"].as_u64().unwrap();
            }
            assert!(Instant::now() < deadline, "no checkpoint in flight: {cp}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let pending = get_json(&format!("{job}/checkpoints/details/{id}/subtasks/slow"));
        // It may have completed meanwhile; if not, the sink is pending.
        if pending["status"] == "IN_PROGRESS" {
            assert_eq!(
                pending["subtasks"][0]["status"], "pending_or_failed",
                "{pending}"
            );
        }

        // The page: the source done, the sink still waited for.
        let browser = Browser::start();
        browser.goto(&format!("{base}/"));
        let shown = browser.wait_for("a checkpoint in flight with its acknowledgements", |b| {
            let v = b.js(
                "const box = document.getElementById('checkpoint-in-progress'); \
                 if (!box || box.hidden) return null; \
                 const f = box.querySelector('li[data-operator=\"fast\"]'); \
                 const s = box.querySelector('li[data-operator=\"slow\"]'); \
                 if (!f || !s || s.classList.contains('done')) return null; \
                 return [f.classList.contains('done'), f.querySelector('.ack-count').textContent, \
                         s.querySelector('.ack-count').textContent, \
                         box.querySelector('.in-progress').dataset.checkpointId];",
            );
            (!v.is_null()).then_some(v)
        });
        assert_eq!(shown[0], true, "{shown}");
        assert_eq!(shown[1], "1/1");
        assert_eq!(shown[2], "0/1");
        browser.screenshot(
            Some("#checkpoints-card"),
            "dashboard-checkpoint-in-progress.png",
        );

        // Once the sink acknowledged, the checkpoint completes and its
        // subtask details say when and how long the sink aligned.
        let shown_id: u64 = shown[3].as_str().unwrap().parse().unwrap();
        let deadline = Instant::now() + PATIENCE;
        let details = loop {
            let d = get_json(&format!(
                "{job}/checkpoints/details/{shown_id}/subtasks/slow"
            ));
            if d["status"] == "COMPLETED" {
                break d;
            }
            assert!(
                Instant::now() < deadline,
                "checkpoint {shown_id} never completed: {d}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        let sink = &details["subtasks"][0];
        assert_eq!(sink["status"], "completed", "{details}");
        // The barrier waited behind at least one 400 ms batch.
        assert!(
            sink["end_to_end_duration"].as_u64().unwrap() >= 400,
            "{details}"
        );
        browser.wait_for("the checkpoint completed in the history", |b| {
            let status = b.js(&format!(
                "const r = document.querySelector('#checkpoint-history tr[data-checkpoint-id=\"{shown_id}\"]'); \
                 return r ? r.dataset.status : null;"
            ));
            (status == "COMPLETED").then_some(())
        });
        drop(browser);
        control.cancel();
        let _ = waiter.join().unwrap();
        drop(server);
    });
}

/// Drops every record.
#[derive(Clone)]
struct DiscardSink;

impl SinkWriter<u64> for DiscardSink {
    fn write(&mut self, _: u64) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A running job of one source (uid `<uid>-source`) and one sink, with
/// `flavour` in its configuration.
fn small_job(name: &str, uid: &str, flavour: &str) -> (JobControl, std::thread::JoinHandle<()>) {
    let env = StreamEnvironment::new();
    env.set_parallelism(1);
    env.set_config("my.job.flavour", flavour);
    env.from_source(
        GeneratorSource::new(u64::MAX, |i| i).with_rate(1_000.0),
        &format!("{name} source"),
    )
    .uid(&format!("{uid}-source"))
    .sink_to(DiscardSink, &format!("{name} sink"))
    .uid(&format!("{uid}-sink"));
    let client = env.execute_async(name).unwrap();
    let control = client.control();
    let waiter = std::thread::spawn(move || {
        let _ = client.wait();
    });
    (control, waiter)
}

#[test]
fn the_dashboard_lists_every_job_of_a_directory_and_shows_the_one_picked() {
    if !browser_available() {
        return;
    }
    with_timeout(300, || {
        let (orders, orders_done) = small_job("orders", "orders", "first");
        let (clicks, clicks_done) = small_job("clicks", "clicks", "second");
        let directory = JobDirectory::new();
        directory.add(orders.clone()).unwrap();
        directory.add(clicks.clone()).unwrap();
        let server =
            RestServer::start_directory(directory.clone(), "127.0.0.1", 0, RestAuth::default())
                .unwrap();
        let base = format!("http://{}", server.local_addr());
        let browser = Browser::start();
        browser.goto(&format!("{base}/"));

        let shown = |b: &Browser| {
            b.js("return [document.getElementById('job-name').textContent, \
                 [...document.querySelectorAll('.node')].map(n => n.dataset.vertex), \
                 (document.querySelector('#config-table tr[data-key=\"my.job.flavour\"] td:last-child') || {}).textContent || null, \
                 [...document.querySelectorAll('#jobs-table tbody tr.selected')].map(r => r.dataset.jobId)];")
        };
        // Both jobs are listed; the first running one is shown.
        let listed = browser.wait_for("both jobs in the job list", |b| {
            let v = b.js(
                "return [...document.querySelectorAll('#jobs-table tbody tr')].map(r => \
                 [r.dataset.jobId, r.querySelector('.job-name').textContent]);",
            );
            (v.as_array()?.len() == 2).then_some(v)
        });
        assert_eq!(
            listed,
            json!([
                [orders.job_id().to_string(), "orders"],
                [clicks.job_id().to_string(), "clicks"]
            ])
        );
        browser.wait_for("the orders job shown", |b| {
            let v = shown(b);
            (v == json!([
                "orders",
                ["orders-source", "orders-sink"],
                "first",
                [orders.job_id().to_string()]
            ]))
            .then_some(())
        });

        // A click on the other row shows that job's graph and
        // configuration, and nothing of the first.
        browser.click(&format!(
            "#jobs-table tr[data-job-id=\"{}\"]",
            clicks.job_id()
        ));
        browser.wait_for("the clicks job shown", |b| {
            let v = shown(b);
            (v == json!([
                "clicks",
                ["clicks-source", "clicks-sink"],
                "second",
                [clicks.job_id().to_string()]
            ]))
            .then_some(())
        });
        let hash = browser.js("return window.location.hash;");
        assert_eq!(hash, format!("#job={}", clicks.job_id()));
        browser.screenshot(Some("#jobs-card"), "dashboard-jobs.png");

        // A cancelled and archived job stays listed with its final status.
        orders.cancel();
        orders_done.join().unwrap();
        assert!(directory.archive(orders.job_id()));
        browser.wait_for("orders listed as CANCELED", |b| {
            let v = b.js(&format!(
                "const r = document.querySelector('#jobs-table tr[data-job-id=\"{}\"] .status'); \
                 return r ? r.textContent : null;",
                orders.job_id()
            ));
            (v == "CANCELED").then_some(())
        });
        drop(browser);
        clicks.cancel();
        clicks_done.join().unwrap();
        drop(server);
    });
}
