//! Logs that group: one render's lines on the coordinator and on the
//! worker carry its render id, and every chunk attempt's lines its attempt
//! id, as JSON with `--log-json`.

use serde_json::Value;

use crate::kit::{WorkerProcess, coordinator, render_command, run, worker_binary};

const SMALL: &str = r#"{"width":64,"height":36,"duration":30,"fps":"30"}"#;

/// The JSON log lines of `text` (other lines, e.g. progress, skipped).
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// A field of a line's event or of any of its spans.
fn field<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    line["fields"].get(name).or_else(|| {
        line["spans"]
            .as_array()?
            .iter()
            .rev()
            .find_map(|s| s.get(name))
    })
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

#[test]
fn a_renders_lines_on_coordinator_and_worker_carry_its_render_and_attempt_ids() {
    let worker = WorkerProcess::start(&worker_binary(), &["--slots", "2", "--log-json"], &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = render_command(&[&worker], SMALL, 3, &dir.path().join("o.mp4"), &[]);
    c.arg("--log-json");
    let o = run(c);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");

    let coordinator_lines = json_lines(&stderr);
    let planned = coordinator_lines
        .iter()
        .find(|l| message(l) == "render planned")
        .unwrap_or_else(|| panic!("no `render planned` line in:\n{stderr}"));
    let render_id = field(planned, "render_id")
        .and_then(Value::as_str)
        .expect("render planned carries render_id")
        .to_owned();
    assert!(!render_id.is_empty());
    let done = coordinator_lines
        .iter()
        .find(|l| message(l) == "render done")
        .expect("a `render done` line");
    assert_eq!(
        field(done, "render_id"),
        Some(&Value::from(render_id.as_str()))
    );
    // The coordinator's attempt spans carry the ids it sent.
    for chunk in 0..3 {
        let attempt_id = format!("{render_id}/{chunk}/1");
        assert!(
            coordinator_lines
                .iter()
                .any(|l| field(l, "attempt_id") == Some(&Value::from(attempt_id.as_str()))),
            "no coordinator line with attempt_id {attempt_id}:\n{stderr}"
        );
    }

    let log = worker.log();
    let worker_lines = json_lines(&log);
    for chunk in 0..3u64 {
        let attempt_id = format!("{render_id}/{chunk}/1");
        for what in ["chunk accepted", "chunk rendered", "chunk delivered"] {
            let line = worker_lines
                .iter()
                .find(|l| {
                    message(l) == what
                        && field(l, "attempt_id") == Some(&Value::from(attempt_id.as_str()))
                })
                .unwrap_or_else(|| panic!("no worker line `{what}` of {attempt_id}:\n{log}"));
            assert_eq!(
                field(line, "render_id"),
                Some(&Value::from(render_id.as_str()))
            );
            assert_eq!(field(line, "chunk"), Some(&Value::from(chunk)));
        }
    }
    // Every worker line about a chunk names the render.
    for line in worker_lines
        .iter()
        .filter(|l| field(l, "attempt_id").is_some())
    {
        assert_eq!(
            field(line, "render_id"),
            Some(&Value::from(render_id.as_str())),
            "{line}"
        );
    }
}

#[test]
fn a_failed_render_logs_its_error_class() {
    let mut c = coordinator();
    c.args(["render", "--composition", "nope", "--out"])
        .arg(std::env::temp_dir().join("never-written.mp4"))
        .arg("--log-json");
    let o = run(c);
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let failed = json_lines(&stderr)
        .into_iter()
        .find(|l| message(l) == "render failed")
        .unwrap_or_else(|| panic!("no `render failed` line in:\n{stderr}"));
    assert_eq!(field(&failed, "class"), Some(&Value::from("input")));
    assert!(
        field(&failed, "error")
            .and_then(Value::as_str)
            .is_some_and(|e| e.contains("composition `nope` not found")),
        "{failed}"
    );
    assert!(field(&failed, "render_id").is_some(), "{failed}");
}
