//! A fault-injecting HTTP proxy in front of the S3 server (moto), for
//! tests of retries: it decides per request, by its index and request line,
//! to forward it, answer with an S3 error, drop the connection (a reset,
//! also mid-upload), stall, or forward it late.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// What the proxy does with one request.
#[derive(Clone, Copy, Debug)]
pub enum Action {
    /// Pass it to moto.
    Forward,
    /// Answer with this status and S3 error code.
    Respond(u16, &'static str),
    /// Close the connection without answering (a connection reset).
    Drop,
    /// Never answer (until the proxy is dropped).
    Stall,
    /// Forward it after this long (a slow server).
    Delay(Duration),
}

type Rule = dyn Fn(usize, &str) -> Action + Send + Sync;

/// An HTTP proxy on 127.0.0.1 in front of moto that decides per request
/// (by its index and request line) to forward it or fail it. Every request
/// it forwards carries `Connection: close`, so each request arrives on its
/// own connection and is seen here.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`: the endpoint clients use instead of moto's.
    pub endpoint: String,
    /// Every request line seen, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
    /// Notified when a request is stalled.
    pub stalled: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` on a free loopback port; `rule` decides
    /// what happens to each request (its index from 0, its request line).
    /// Runs on the current tokio runtime until dropped.
    pub async fn start(
        upstream: SocketAddr,
        rule: impl Fn(usize, &str) -> Action + Send + Sync + 'static,
    ) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stalled = Arc::new(Notify::new());
        let rule: Arc<Rule> = Arc::new(rule);
        let (reqs, stall) = (requests.clone(), stalled.clone());
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            let counter = Arc::new(AtomicUsize::new(0));
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (rule, reqs, stall, counter) =
                    (rule.clone(), reqs.clone(), stall.clone(), counter.clone());
                conns.spawn(async move {
                    let _ = serve(sock, upstream, &*rule, &reqs, &stall, &counter).await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        FaultProxy {
            endpoint: format!("http://{addr}"),
            requests,
            stalled,
            task,
        }
    }

    /// Every request line seen so far.
    pub fn request_lines(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Dropping the accept task drops its JoinSet, aborting connections.
        self.task.abort();
    }
}

async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    rule: &Rule,
    requests: &Mutex<Vec<String>>,
    stalled: &Notify,
    counter: &AtomicUsize,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let request_line = head.lines().next().unwrap_or_default().to_owned();
    let index = counter.fetch_add(1, Ordering::SeqCst);
    requests.lock().expect("lock").push(request_line.clone());
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let mut action = rule(index, &request_line);
    if let Action::Delay(wait) = action {
        tokio::time::sleep(wait).await;
        action = Action::Forward;
    }
    match action {
        Action::Forward | Action::Delay(_) => {
            let mut rewritten = String::new();
            for line in head[..head_end - 4].split("\r\n") {
                if line.to_ascii_lowercase().starts_with("connection:") {
                    continue;
                }
                rewritten.push_str(line);
                rewritten.push_str("\r\n");
            }
            rewritten.push_str("Connection: close\r\n\r\n");
            let mut up = TcpStream::connect(upstream).await?;
            up.write_all(rewritten.as_bytes()).await?;
            up.write_all(&buf[head_end..]).await?;
            tokio::io::copy_bidirectional(&mut client, &mut up).await?;
        }
        Action::Respond(status, code) => {
            let expects_continue =
                header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
            if !expects_continue {
                // Read the body so the client sees our answer, not a reset.
                let len: usize = header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut remaining = len.saturating_sub(buf.len() - head_end);
                let mut sink = vec![0u8; 64 * 1024];
                while remaining > 0 {
                    let n = client.read(&mut sink[..remaining.min(64 * 1024)]).await?;
                    if n == 0 {
                        break;
                    }
                    remaining -= n;
                }
            }
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
            );
            let reason = match status {
                403 => "Forbidden",
                500 => "Internal Server Error",
                503 => "Service Unavailable",
                _ => "Error",
            };
            let response = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            client.write_all(response.as_bytes()).await?;
            client.shutdown().await?;
        }
        Action::Drop => {
            drop(client);
        }
        Action::Stall => {
            stalled.notify_one();
            std::future::pending::<()>().await;
        }
    }
    Ok(())
}
