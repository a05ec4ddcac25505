//! Trust: TLS and mutual TLS between the coordinator CLI and real worker
//! processes, with certificates made here (rcgen): a render works end to
//! end; a coordinator without the client certificate, one that does not
//! trust the worker's CA, and one speaking plain HTTP to a TLS worker all
//! fail with an error that says why. And renders over the planner's bounds
//! exit 2 before any worker writes a byte.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};

use crate::kit::{WorkerProcess, render_on, sha256, worker_binary};

const SMALL: &str = r#"{"width":96,"height":54,"duration":24,"fps":"24"}"#;

/// A CA, a worker certificate for 127.0.0.1 and localhost, and a client
/// certificate, as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Self::ca();
        let leaf = |names: Vec<String>, usage, cert: &str, key: &str| {
            let mut params = CertificateParams::new(names).expect("names");
            params.extended_key_usages = vec![usage];
            let key_pair = KeyPair::generate().expect("key");
            let c = params.signed_by(&key_pair, &ca).expect("sign");
            std::fs::write(dir.path().join(cert), c.pem()).expect("write cert");
            std::fs::write(dir.path().join(key), key_pair.serialize_pem()).expect("write key");
        };
        leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "worker.pem",
            "worker.key",
        );
        leaf(
            vec!["coordinator".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
            "client.pem",
            "client.key",
        );
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write ca");
        std::fs::write(dir.path().join("other-ca.pem"), Self::ca().pem()).expect("write ca");
        Pki { dir }
    }

    fn ca() -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca")
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn port(w: &WorkerProcess) -> &str {
    w.addr.rsplit_once(':').expect("host:port").1
}

fn render(out: &Path, flags: &[&str]) -> (Option<i32>, String) {
    let o = render_on(&[], SMALL, 3, out, flags);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_render_over_mutual_tls_and_the_ways_it_is_refused() {
    let pki = Pki::new();
    let w = WorkerProcess::start(
        &worker_binary(),
        &[
            "--slots",
            "2",
            "--tls-cert",
            &pki.path("worker.pem"),
            "--tls-key",
            &pki.path("worker.key"),
            "--tls-client-ca",
            &pki.path("ca.pem"),
        ],
        &[],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let https = format!("https://127.0.0.1:{}#2", port(&w));
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );

    // End to end: the same bytes as workers in this process.
    let out = dir.path().join("tls.mp4");
    let (code, stderr) = render(
        &out,
        &[
            "--worker",
            &https,
            "--tls-ca",
            &ca,
            "--tls-client-cert",
            &cert,
            "--tls-client-key",
            &key,
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let local = dir.path().join("local.mp4");
    let (code, stderr) = render(&local, &["--local", "1"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(sha256(&out), sha256(&local));

    // No client certificate: the worker ends the handshake.
    let refused: PathBuf = dir.path().join("refused.mp4");
    let (code, stderr) = render(&refused, &["--worker", &https, "--tls-ca", &ca]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("no worker could describe")
            && stderr.contains("https://127.0.0.1:")
            && stderr.contains("(check the TLS settings: the worker's CA in --tls-ca, and --tls-client-cert/--tls-client-key if it requires client certificates)"),
        "{stderr}"
    );
    assert!(!refused.exists());

    // A CA that did not sign the worker's certificate.
    let (code, stderr) = render(
        &refused,
        &[
            "--worker",
            &https,
            "--tls-ca",
            &pki.path("other-ca.pem"),
            "--tls-client-cert",
            &cert,
            "--tls-client-key",
            &key,
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("invalid peer certificate"), "{stderr}");

    // Plain HTTP to the TLS worker says what to check.
    let http = format!("http://127.0.0.1:{}", port(&w));
    let (code, stderr) = render(&refused, &["--worker", &http]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("(if this worker serves TLS, address it as https://)"),
        "{stderr}"
    );
    // And with TLS configured, a plain worker is an input error.
    let (code, stderr) = render(&refused, &["--worker", &http, "--tls-ca", &ca]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("is plain HTTP but TLS is configured (--tls-ca or a client certificate): address it as https://"),
        "{stderr}"
    );
    assert!(!refused.exists());
}

#[test]
fn unusable_certificates_are_refused_naming_the_flags() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").expect("write");
    let (code, stderr) = render(
        &dir.path().join("x.mp4"),
        &[
            "--worker",
            "https://127.0.0.1:1",
            "--tls-ca",
            &pki.path("ca.pem"),
            "--tls-client-cert",
            &pki.path("client.pem"),
            "--tls-client-key",
            junk.to_str().expect("utf8"),
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "--tls-ca/--tls-client-cert/--tls-client-key: the certificates cannot be used"
        ),
        "{stderr}"
    );

    let worker = std::process::Command::new(worker_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--cache-dir"])
        .arg(dir.path().join("cache"))
        .args(["--tls-cert", &pki.path("worker.pem"), "--tls-key"])
        .arg(&junk)
        .output()
        .expect("run worker");
    let stderr = String::from_utf8_lossy(&worker.stderr);
    assert!(!worker.status.success(), "{stderr}");
    assert!(
        stderr
            .contains("--tls-cert/--tls-key/--tls-client-ca: the TLS certificates cannot be used"),
        "{stderr}"
    );
}

#[test]
fn plans_over_the_bounds_exit_2_before_any_worker_renders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("never.mp4");
    // Two hours of 30 fps in one chunk: two hours of audio.
    let long = r#"{"width":64,"height":36,"duration":216000,"fps":"30"}"#;
    let o = render_on(&[], long, 1, &out, &["--local", "1"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "chunk 0 (frames 0-215999) owns 345600000 audio samples at 48000 Hz; a chunk may own at most 172800000"
        ),
        "{stderr}"
    );
    // A frame step that makes output frames last over 1001 s.
    let o = render_on(
        &[],
        long,
        1,
        &out,
        &["--local", "1", "--every-nth-frame", "40000"],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "the output frame rate 3/4000 fps (fps 30 ÷ every_nth_frame 40000) is too slow"
        ),
        "{stderr}"
    );
    assert!(!out.exists());
}
