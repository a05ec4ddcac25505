//! The queue fleet against a real SQS- and S3-protocol server (moto on
//! loopback): `coordinator batch --queue` sends, `coordinator agent`
//! processes render; agents are killed, stopped and sent duplicates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use storage::queue::{Queue, QueueOptions};
use storage::{ObjectStore as _, S3Config, S3Store};

use crate::batch::{batch, results, tiny_bundle};
use crate::kit::{coordinator, run, sha256};
use crate::s3::{bucket, download, keys};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn moto_config() -> S3Config {
    S3Config::static_endpoint(
        &testkit::moto().endpoint,
        testkit::REGION,
        testkit::ACCESS_KEY,
        testkit::SECRET_KEY,
    )
}

/// A fresh queue on moto (with a dead-letter queue after `max_receives`
/// when given).
fn queue(tag: &str, max_receives: Option<u32>) -> (Queue, Option<Queue>) {
    let rt = runtime();
    let config = moto_config();
    let dead = max_receives.map(|_| {
        rt.block_on(Queue::create(
            &testkit::bucket(&format!("{tag}-dlq")),
            &QueueOptions::default(),
            &config,
        ))
        .expect("dead-letter queue")
    });
    let options = QueueOptions {
        visibility_timeout: Duration::from_secs(30),
        dead_letter: dead
            .as_ref()
            .zip(max_receives)
            .map(|(d, n)| (d.url().to_owned(), n)),
    };
    let q = rt
        .block_on(Queue::create(&testkit::bucket(tag), &options, &config))
        .expect("queue");
    (q, dead)
}

/// A `coordinator agent` process with one local worker, logging JSON to a
/// file; killed on drop.
struct AgentProcess {
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl AgentProcess {
    fn start(queue: &Queue, extra: &[&str]) -> AgentProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("agent.log");
        let mut c = coordinator();
        c.envs(testkit::moto().aws_env())
            .args(["--log-json", "agent", "--queue", queue.url()])
            .args(["--local", "1", "--receive-wait", "1", "--cache", "off"])
            .args(extra)
            .stdout(Stdio::from(
                std::fs::File::create(dir.path().join("stdout")).expect("stdout"),
            ))
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log")));
        AgentProcess {
            child: Some(c.spawn().expect("start the agent")),
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address of `--metrics-listen 127.0.0.1:0`, from its stdout.
    fn metrics_addr(&self) -> String {
        let path = self.log.with_file_name("stdout");
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if let Some(url) = text
                .lines()
                .find_map(|l| l.strip_prefix("metrics on http://"))
            {
                return url.trim_end_matches("/metrics").to_owned();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no metrics line: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The JSON log lines whose message is `what`.
    fn lines(&self, what: &str) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["fields"]["message"] == what)
            .collect()
    }

    /// Waits until the log has a line `what`; returns its fields.
    fn wait_for(&self, what: &str, within: Duration) -> serde_json::Value {
        let start = Instant::now();
        loop {
            if let Some(l) = self.lines(what).into_iter().next() {
                return l["fields"].clone();
            }
            assert!(
                start.elapsed() < within,
                "no `{what}` within {within:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// Waits for the agent to exit 0; how each of its jobs settled.
    fn outcomes_after_exit(&mut self, within: Duration) -> Vec<String> {
        let status = self.wait_exit(within);
        assert_eq!(status.code(), Some(0), "{}", self.log());
        self.lines("job settled")
            .iter()
            .map(|l| l["fields"]["outcome"].as_str().expect("outcome").to_owned())
            .collect()
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if start.elapsed() > within {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the agent did not exit within {within:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The batch's result records, by variant.
fn job_results(store: &S3Store, prefix: &str) -> BTreeMap<String, serde_json::Value> {
    let rt = runtime();
    keys(store, prefix)
        .into_iter()
        .filter(|k| k.contains("/results/"))
        .map(|k| {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("r.json");
            rt.block_on(store.get_file(&k, &path, None)).expect("get");
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
            (v["variant"].as_str().expect("variant").to_owned(), v)
        })
        .collect()
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const ROWS: &str = "name,count,frames\n\
    Long,1,120\n\
    Ada,1,6\n\
    Bob,2,6\n\
    Cy,3,6\n\
    Dee,4,9\n\
    Eve,5,6\n\
    Fay,6,6\n\
    Ada,1,6\n";

#[test]
fn a_fleet_of_agents_renders_a_batch_like_one_machine_and_a_killed_agent_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = tiny_bundle(dir.path());
    let rows = dir.path().join("rows.csv");
    // The last row is row 2's variant under another name: a copy.
    std::fs::write(&rows, ROWS).expect("rows");
    let (name, store) = bucket("fleet");
    let (q, _) = queue("fleet", None);
    let out = format!("s3://{name}/campaign/");
    let name_template = "{name}-{count}-{row}.mp4";

    // The batch waits for the agents' results.
    let results_file = dir.path().join("results.jsonl");
    let waiting = send_and_wait(&bundle, &rows, &out, name_template, &q, &results_file, 7);

    // The first agent takes the longest variant (sent first) and dies.
    let killed = AgentProcess::start(&q, &["--visibility-timeout", "2"]);
    let started = killed.wait_for("job started", Duration::from_secs(60));
    killed.signal("-9");
    let lost = started["message_id"]
        .as_str()
        .expect("message id")
        .to_owned();
    assert!(killed.lines("job settled").is_empty(), "{}", killed.log());

    let fleet: Vec<AgentProcess> = (0..2)
        .map(|_| AgentProcess::start(&q, &["--visibility-timeout", "2"]))
        .collect();
    let o = waiting.wait_with_output().expect("batch");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("7 variants in") && stderr.contains("(8 rows, 1 duplicates)"),
        "{stderr}"
    );
    drop(fleet);

    // Every row has its output, once, under its name.
    let rows_done = results(&results_file);
    assert_eq!(rows_done.len(), 8);
    assert!(
        rows_done.iter().all(|r| r["status"] != "failed"),
        "{rows_done:?}"
    );
    let mp4s: Vec<String> = keys(&store, "campaign/")
        .into_iter()
        .filter(|k| k.ends_with(".mp4"))
        .collect();
    assert_eq!(
        mp4s,
        [
            "campaign/Ada-1-2.mp4",
            "campaign/Ada-1-8.mp4",
            "campaign/Bob-2-3.mp4",
            "campaign/Cy-3-4.mp4",
            "campaign/Dee-4-5.mp4",
            "campaign/Eve-5-6.mp4",
            "campaign/Fay-6-7.mp4",
            "campaign/Long-1-1.mp4",
        ]
    );

    // The killed agent's job came back after its lease and was rendered
    // once more: its second delivery, and no third (the lease was extended
    // while it rendered).
    let records = job_results(&store, "campaign/.montage/");
    assert_eq!(records.len(), 7);
    let lost_record = records
        .values()
        .find(|r| r["message"] == lost.as_str())
        .expect("the lost job's result");
    assert_eq!(lost_record["receive_count"], 2, "{lost_record}");
    assert_eq!(lost_record["status"], "rendered");

    // Byte-identical to one machine's batch of the same file.
    let local = dir.path().join("local");
    let o = run(batch(
        &bundle,
        &rows,
        local.to_str().expect("utf8"),
        &["--name", name_template, "--cache", "off"],
    ));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for key in &mp4s {
        let file = key.trim_start_matches("campaign/");
        let fetched = dir.path().join(format!("s3-{file}"));
        download(&store, key, &fetched);
        assert_eq!(sha256(&fetched), sha256(&local.join(file)), "{key}");
    }
}

/// `coordinator batch-status --out OUT --batch ID`'s line.
fn batch_status(out: &str, id: &str) -> String {
    let mut c = coordinator();
    c.envs(testkit::moto().aws_env())
        .args(["batch-status", "--out", out, "--batch", id]);
    let o = run(c);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// Receives the only message, keeps its body, and gives it back.
fn peek(q: &Queue) -> String {
    let rt = runtime();
    let m = rt
        .block_on(q.receive(1, Duration::from_secs(1), Duration::from_secs(5)))
        .expect("receive")
        .into_iter()
        .next()
        .expect("a message");
    rt.block_on(q.release(&m.receipt)).expect("release");
    m.body
}

/// Takes the only message off the queue, as the job it holds.
fn take_job(q: &Queue) -> coordinator::batch::queue::QueueJob {
    let rt = runtime();
    let m = rt
        .block_on(q.receive(1, Duration::from_secs(1), Duration::from_secs(5)))
        .expect("receive")
        .remove(0);
    rt.block_on(q.delete(&m.receipt)).expect("delete");
    serde_json::from_str(&m.body).expect("a job")
}

/// `batch --queue … --wait` of `rows` into `out`, started, once its
/// `variants` messages are on the queue.
fn send_and_wait(
    bundle: &Path,
    rows: &Path,
    out: &str,
    name_template: &str,
    q: &Queue,
    results_file: &Path,
    variants: u64,
) -> Child {
    let mut waiting = batch(bundle, rows, out, &["--name", name_template]);
    waiting
        .envs(testkit::moto().aws_env())
        .args(["--queue", q.url(), "--wait", "--results"])
        .arg(results_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let waiting = waiting.spawn().expect("batch --queue --wait");
    wait_until("the messages are sent", Duration::from_secs(60), || {
        runtime().block_on(q.depth()).expect("depth").waiting == variants
    });
    waiting
}

/// `batch --queue` of `rows` into `out` without waiting; the batch id.
fn send(bundle: &Path, rows: &Path, out: &str, q: &Queue) -> String {
    let mut c = batch(bundle, rows, out, &["--name", "{name}.mp4"]);
    c.envs(testkit::moto().aws_env())
        .args(["--queue", q.url(), "--results"])
        .arg(rows.with_extension("results.jsonl"));
    // --json prints events; the id is in the `queued` event.
    let o = run(c);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let queued: serde_json::Value = serde_json::from_str(
        crate::kit::events(&stdout, "queued")
            .first()
            .expect("queued event"),
    )
    .expect("json");
    queued["batch"].as_str().expect("batch id").to_owned()
}

#[test]
fn sigterm_gives_the_job_back_and_a_duplicate_delivery_is_not_rendered_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = tiny_bundle(dir.path());
    let rows = dir.path().join("rows.csv");
    std::fs::write(&rows, "name,frames\nLong,240\n").expect("rows");
    let (name, store) = bucket("term");
    let (q, _) = queue("term", None);
    let out = format!("s3://{name}/c/");
    let batch_id = send(&bundle, &rows, &out, &q);
    let body = peek(&q);

    // SIGTERM mid-job: the agent exits 0 and the job is back at once.
    let mut agent = AgentProcess::start(&q, &[]);
    agent.wait_for("job started", Duration::from_secs(60));
    agent.signal("-TERM");
    assert_eq!(
        agent.outcomes_after_exit(Duration::from_secs(30)),
        ["released"]
    );
    assert!(keys(&store, "c/Long.mp4").is_empty());

    // The next agent renders it (its second delivery, without waiting
    // out the 300 s lease).
    let mut next = AgentProcess::start(&q, &["--max-jobs", "1"]);
    assert_eq!(
        next.outcomes_after_exit(Duration::from_secs(60)),
        ["rendered"]
    );
    // Its third delivery: the test's look at it, the stopped agent's, this.
    let records = job_results(&store, "c/.montage/");
    let record = records.values().next().expect("a result");
    assert_eq!(record["receive_count"], 3, "{record}");
    let rendered = store.clone();
    let before = runtime()
        .block_on(rendered.head("c/Long.mp4"))
        .expect("head")
        .expect("the output");

    // The same message again (SQS delivers at least once): acknowledged
    // without rendering, the output untouched.
    runtime().block_on(q.send(&body)).expect("send again");
    let mut dup = AgentProcess::start(&q, &["--max-jobs", "1"]);
    assert_eq!(
        dup.outcomes_after_exit(Duration::from_secs(60)),
        ["duplicate"]
    );
    assert_eq!(job_results(&store, "c/.montage/"), records);
    let after = runtime()
        .block_on(rendered.head("c/Long.mp4"))
        .expect("head")
        .expect("the output");
    assert_eq!(after, before);
    assert_eq!(
        runtime().block_on(q.depth()).expect("depth"),
        storage::queue::QueueDepth::default()
    );

    assert_eq!(
        batch_status(&out, &batch_id),
        format!(
            "batch {batch_id}: 1 variants: 1 rendered, 0 from the cache, 0 failed, 0 retrying, 0 pending; finished"
        )
    );
}

#[test]
fn a_job_failing_every_time_goes_to_the_dead_letter_queue_with_its_error_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = tiny_bundle(dir.path());
    let rows = dir.path().join("rows.csv");
    std::fs::write(&rows, "name\nAda\n").expect("rows");
    let (name, store) = bucket("dead");
    let (q, dead) = queue("dead", Some(2));
    let dead = dead.expect("dead-letter queue");
    let out = format!("s3://{name}/c/");
    let batch_id = send(&bundle, &rows, &out, &q);

    // The job as sent, made to name an image the bundle does not have (as
    // if the bundle had changed under it), then sent in its place.
    let rt = runtime();
    let mut job = take_job(&q);
    let payload = job.payload.as_mut().expect("inline payload");
    payload
        .job
        .props
        .insert("image.Badge".into(), "nope.png".into());
    job.variant = payload.job.id();
    rt.block_on(q.send(&job.to_body().expect("body")))
        .expect("send");

    let mut agent = AgentProcess::start(&q, &["--max-jobs", "2"]);
    let settled = agent.outcomes_after_exit(Duration::from_secs(60));
    assert_eq!(settled, ["failed", "failed"]);

    let records = job_results(&store, "c/.montage/");
    let record = records.values().next().expect("a result");
    assert_eq!(record["status"], "failed");
    assert_eq!(record["receive_count"], 2);
    assert_eq!(record["last"], true);
    assert_eq!(record["error"]["reason"], "missing_asset", "{record}");
    assert_eq!(record["error"]["class"], "input");
    assert!(
        record["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nope.png")),
        "{record}"
    );
    // The next receive moves it to the dead-letter queue.
    wait_until(
        "the message is dead-lettered",
        Duration::from_secs(20),
        || {
            rt.block_on(q.receive(1, Duration::from_secs(1), Duration::from_secs(5)))
                .expect("receive")
                .is_empty()
                && !rt
                    .block_on(dead.receive(1, Duration::from_secs(1), Duration::from_secs(5)))
                    .expect("receive")
                    .is_empty()
        },
    );
    assert_eq!(
        batch_status(&out, &batch_id),
        format!(
            "batch {batch_id}: 1 variants: 0 rendered, 0 from the cache, 1 failed (1 missing asset), 0 retrying, 0 pending; finished"
        )
    );
}

/// `GET /metrics` of `addr`, the body.
fn scrape(addr: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to metrics");
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("answer");
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
    answer
}

/// The value of the sample `name` (with its labels as written), if any.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn an_agent_counts_its_jobs_for_prometheus_and_posts_them_and_the_batch_its_summary() {
    use crate::webhook::{hook_server, python_signature};
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = tiny_bundle(dir.path());
    let rows = dir.path().join("rows.csv");
    std::fs::write(&rows, "name\nAda\nBob\n").expect("rows");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").expect("secret");
    let (hook, received) = hook_server(&[]);
    let (name, _store) = bucket("metrics");
    let (q, _) = queue("metrics", None);
    let out = format!("s3://{name}/c/");
    let secret_flag = secret.to_str().expect("utf8");

    let mut waiting = batch(&bundle, &rows, &out, &["--name", "{name}.mp4"]);
    waiting
        .envs(testkit::moto().aws_env())
        .args(["--queue", q.url(), "--wait", "--results"])
        .arg(dir.path().join("results.jsonl"))
        .args(["--webhook", &hook, "--webhook-secret-file", secret_flag])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let waiting = waiting.spawn().expect("batch --queue --wait");
    let mut agent = AgentProcess::start(
        &q,
        &[
            "--grace",
            "5",
            "--metrics-listen",
            "127.0.0.1:0",
            "--webhook",
            &hook,
            "--webhook-secret-file",
            secret_flag,
        ],
    );
    let addr = agent.metrics_addr();
    assert_eq!(sample(&scrape(&addr), "montage_agent_jobs_busy"), Some(0.0));
    let o = waiting.wait_with_output().expect("batch");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Both jobs counted (the last may still be settling).
    let mut text = String::new();
    wait_until("both jobs counted", Duration::from_secs(30), || {
        text = scrape(&addr);
        sample(
            &text,
            r#"montage_agent_variants_total{outcome="rendered",class=""}"#,
        ) == Some(2.0)
    });
    assert_eq!(
        sample(&text, "montage_agent_render_seconds_count"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "montage_agent_receive_lag_seconds_count"),
        Some(2.0),
        "{text}"
    );
    assert!(
        sample(&text, "montage_agent_leases_extended_total").is_some(),
        "{text}"
    );
    assert!(
        sample(&text, "montage_agent_resident_memory_bytes").is_some_and(|b| b > 0.0),
        "{text}"
    );
    agent.signal("-TERM");
    let settled = agent.outcomes_after_exit(Duration::from_secs(60));
    assert_eq!(settled, ["rendered", "rendered"]);

    // Each job posted, signed; the batch posted its summary.
    let got = received.lock().expect("lock").clone();
    let mut events: Vec<&str> = got.iter().map(|r| r.header("x-montage-event")).collect();
    events.sort_unstable();
    assert_eq!(events, ["batch.finished", "job.succeeded", "job.succeeded"]);
    for r in &got {
        assert_eq!(
            r.header("x-montage-signature"),
            python_signature("s3cret", r)
        );
    }
    let job = got
        .iter()
        .find(|r| r.header("x-montage-event") == "job.succeeded")
        .expect("a job event")
        .json();
    assert_eq!(job["status"], "rendered");
    assert!(
        job["output"].as_str().is_some_and(|o| o.starts_with(&out)),
        "{job}"
    );
    let summary = got
        .iter()
        .find(|r| r.header("x-montage-event") == "batch.finished")
        .expect("the batch's event")
        .json();
    assert_eq!(
        (
            summary["rows"].as_u64(),
            summary["rendered"].as_u64(),
            summary["failed"].as_u64()
        ),
        (Some(2), Some(2), Some(0)),
        "{summary}"
    );
}

#[test]
fn a_payload_too_large_for_a_message_is_read_from_storage_and_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = tiny_bundle(dir.path());
    let rows = dir.path().join("rows.csv");
    std::fs::write(&rows, "name\nAda\n").expect("rows");
    let (name, store) = bucket("stored");
    let (q, _) = queue("stored", None);
    let out = format!("s3://{name}/c/");
    let batch_id = send(&bundle, &rows, &out, &q);

    // The message as `batch --queue` sends a payload over 256 KiB: the
    // payload under the batch's jobs/, the message naming only the variant.
    let rt = runtime();
    let mut job = take_job(&q);
    let payload = job.payload.take().expect("inline payload");
    let key = format!("c/.montage/batches/{batch_id}/jobs/{}.json", job.variant);
    rt.block_on(store.put_bytes(&key, payload.to_bytes().expect("bytes").into()))
        .expect("store the payload");
    rt.block_on(q.send(&job.to_body().expect("body")))
        .expect("send");
    let mut agent = AgentProcess::start(&q, &["--max-jobs", "1"]);
    assert_eq!(
        agent.outcomes_after_exit(Duration::from_secs(60)),
        ["rendered"]
    );
    assert_eq!(keys(&store, "c/Ada.mp4"), ["c/Ada.mp4"]);

    // A stored payload is checked like an inline one: another variant's
    // is refused, naming it.
    let mut other = payload.clone();
    other.job.props.insert("name".into(), "Eve".into());
    rt.block_on(store.put_bytes(&key, other.to_bytes().expect("bytes").into()))
        .expect("store");
    rt.block_on(store.delete(&format!(
        "c/.montage/batches/{batch_id}/results/{}.json",
        job.variant
    )))
    .expect("forget the result");
    rt.block_on(q.send(&job.to_body().expect("body")))
        .expect("send");
    let mut agent = AgentProcess::start(&q, &["--max-jobs", "1"]);
    assert_eq!(
        agent.outcomes_after_exit(Duration::from_secs(60)),
        ["failed"]
    );
    let record = job_results(&store, "c/.montage/")
        .remove(&job.variant.to_string())
        .expect("a result");
    assert_eq!(record["error"]["reason"], "invalid_input", "{record}");
    assert!(
        record["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("jobs/") && m.contains("as the message says")),
        "{record}"
    );
}

#[test]
fn an_agent_killed_on_the_last_delivery_is_recorded_lost_and_a_wait_can_time_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = tiny_bundle(dir.path());
    let rows = dir.path().join("rows.csv");
    std::fs::write(&rows, "name,frames\nLong,240\n").expect("rows");
    let (name, _store) = bucket("lost");
    // One delivery only: the agent that dies on it was the last chance.
    let (q, _dead) = queue("lost", Some(1));
    let out = format!("s3://{name}/c/");
    let results_file = dir.path().join("results.jsonl");
    let waiting = send_and_wait(&bundle, &rows, &out, "{name}.mp4", &q, &results_file, 1);

    let killed = AgentProcess::start(&q, &["--visibility-timeout", "2"]);
    killed.wait_for("job started", Duration::from_secs(60));
    killed.signal("-9");
    // Another agent's receive after the lease moves the message to the
    // dead-letter queue; it never renders it.
    let next = AgentProcess::start(&q, &[]);
    let o = output_within(waiting, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(next.lines("job started").is_empty(), "{}", next.log());
    drop(next);
    let rows_done = results(&results_file);
    assert_eq!(rows_done.len(), 1);
    let row = &rows_done[0];
    assert_eq!(row["status"], "failed", "{row}");
    assert_eq!(row["error"]["reason"], "worker_lost", "{row}");
    let message = row["error"]["message"].as_str().expect("message");
    assert!(
        message.starts_with(
            "no agent finished it in 1 deliveries: the message is in the dead-letter queue"
        ),
        "{message}"
    );
    let id = serde_json::from_str::<serde_json::Value>(
        crate::kit::events(&stdout, "queued")
            .first()
            .expect("queued event"),
    )
    .expect("json")["batch"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        batch_status(&out, &id),
        format!(
            "batch {id}: 1 variants: 0 rendered, 0 from the cache, 1 failed (1 worker lost), 0 retrying, 0 pending; finished"
        )
    );

    // No agent at all: --wait-timeout ends the wait, the row timed out.
    let (q2, _) = queue("lost-timeout", None);
    let results_file = dir.path().join("timeout.jsonl");
    let started = Instant::now();
    let mut c = batch(
        &bundle,
        &rows,
        &format!("s3://{name}/t/"),
        &["--name", "{name}.mp4"],
    );
    c.envs(testkit::moto().aws_env())
        .args([
            "--queue",
            q2.url(),
            "--wait",
            "--wait-timeout",
            "2",
            "--results",
        ])
        .arg(&results_file);
    let o = run(c);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    let rows_done = results(&results_file);
    assert_eq!(rows_done[0]["status"], "failed");
    assert_eq!(rows_done[0]["error"]["reason"], "timed_out");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("1 timed out"), "{stderr}");
}

/// The output of `child`, which must exit within `within` (else it is
/// killed and the test fails, instead of hanging).
fn output_within(mut child: Child, within: Duration) -> std::process::Output {
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > within {
            let _ = child.kill();
            let o = child.wait_with_output().expect("output");
            panic!(
                "still running after {within:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}
