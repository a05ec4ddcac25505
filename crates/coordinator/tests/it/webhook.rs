//! Completion webhooks, received by a real HTTP server in the test: signed
//! (checked by Python's hmac, an independent implementation), retried after
//! a 503, sent for failures too.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use crate::kit::{coordinator, run};

const QUICK: &str = r#"{"width":64,"height":36,"duration":15,"fps":"30"}"#;

/// One request the server received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Received {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// An HTTP/1.1 server on a free port answering each request with the next
/// status of `statuses` (then 200), recording what it received.
pub(crate) fn hook_server(statuses: &[u16]) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&received);
    let statuses: Vec<u16> = statuses.to_vec();
    std::thread::spawn(move || {
        let mut statuses = statuses.into_iter();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut headers = Vec::new();
            let mut line = String::new();
            reader.read_line(&mut line).expect("request line");
            loop {
                line.clear();
                reader.read_line(&mut line).expect("header");
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    headers.push((k.trim().to_owned(), v.trim().to_owned()));
                }
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body).expect("body");
            log.lock().expect("lock").push(Received { headers, body });
            let status = statuses.next().unwrap_or(200);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (url, received)
}

/// The signature Python's hmac computes for this delivery.
pub(crate) fn python_signature(secret: &str, r: &Received) -> String {
    let script = "import hmac,hashlib,sys; s=sys.argv[1].encode(); ts=sys.argv[2].encode(); body=sys.stdin.buffer.read(); print('v1='+hmac.new(s, ts+b'.'+body, hashlib.sha256).hexdigest())";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, secret, r.header("x-montage-timestamp")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&r.body)
        .expect("write body");
    let out = child.wait_with_output().expect("python3 output");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_finished_render_posts_a_signed_event_retried_after_a_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cr3t\n").expect("secret");
    let (url, received) = hook_server(&[503]);
    let out = dir.path().join("out.mp4");
    let mut c = coordinator();
    c.args([
        "render",
        "--local",
        "1",
        "--chunks",
        "1",
        "--props",
        QUICK,
        "--webhook",
        &url,
    ])
    .arg("--webhook-secret-file")
    .arg(&secret)
    .arg("--out")
    .arg(&out);
    let o = run(c);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = received.lock().expect("lock").clone();
    assert_eq!(got.len(), 2, "one 503, then the retry: {got:?}");
    // One delivery, retried: the same id and body.
    assert_eq!(
        got[0].header("x-montage-delivery"),
        got[1].header("x-montage-delivery")
    );
    assert_eq!(got[0].body, got[1].body);
    let event = got[1].json();
    assert_eq!(got[1].header("x-montage-event"), "render.succeeded");
    assert_eq!(event["event"], "render.succeeded");
    assert_eq!(event["frames"], 15);
    assert_eq!(event["output"], out.display().to_string());
    assert!(
        event["render_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("test-pattern-"))
    );
    for r in &got {
        assert_eq!(
            r.header("x-montage-signature"),
            python_signature("s3cr3t", r)
        );
    }
}

#[test]
fn a_failed_render_posts_its_error_kind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, received) = hook_server(&[]);
    let mut c = coordinator();
    // Nothing listens on port 1: no worker can describe the composition.
    c.args([
        "render",
        "--worker",
        "http://127.0.0.1:1",
        "--chunks",
        "1",
        "--props",
        QUICK,
        "--webhook",
        &url,
        "--out",
    ])
    .arg(dir.path().join("never.mp4"));
    let o = run(c);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let got = received.lock().expect("lock").clone();
    assert_eq!(got.len(), 1, "{got:?}");
    let event = got[0].json();
    assert_eq!(event["event"], "render.failed");
    assert_eq!(event["error"]["kind"], "worker");
    assert!(
        event["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("127.0.0.1:1")),
        "{event}"
    );
    assert_eq!(got[0].header("x-montage-signature"), "");
}
