//! Worker pools: where chunks can run.
//!
//! A pool publishes its current workers on a `watch` channel; the scheduler
//! follows changes while a render runs (a DNS name re-resolved as a
//! Kubernetes headless service scales, for example).

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::schedule::WorkerInfo;

/// How often a DNS pool is re-resolved unless configured otherwise.
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(10);

/// A fixed list of workers or a DNS name that resolves to many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemotePool {
    /// These workers, each with its slot count.
    Addresses(Vec<WorkerInfo>),
    /// Every address `host` resolves to, on `port`, each with `slots` slots,
    /// re-resolved every `refresh`.
    Dns {
        /// The DNS name, e.g. `workers.render.svc.cluster.local`.
        host: String,
        /// The workers' gRPC port.
        port: u16,
        /// Slots per resolved worker.
        slots: u32,
        /// How often to resolve again.
        refresh: Duration,
    },
}

fn bad_address(given: &str) -> Error {
    Error::Input(format!(
        "worker `{}` is not a worker URL: write it as http://HOST:PORT, optionally followed by #SLOTS",
        spec::quote(given)
    ))
}

fn zero_slots(given: &str) -> Error {
    Error::Input(format!(
        "worker `{}` has 0 slots: it must have at least 1",
        spec::quote(given)
    ))
}

/// Parses `http://host:port` or `host:port`, optionally followed by `#N` for
/// `N` slots (1 by default).
///
/// # Errors
/// [`Error::Input`] naming the text given.
pub fn parse_worker(text: &str) -> Result<WorkerInfo, Error> {
    let (url, slots) = match text.rsplit_once('#') {
        Some((u, s)) => (u, s.parse::<u32>().map_err(|_| bad_address(text))?),
        None => (text, 1),
    };
    if slots == 0 {
        return Err(zero_slots(text));
    }
    let url = if url.starts_with("http://") || url.starts_with("https://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or_default();
    let valid = rest.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && port.trim_end_matches('/').parse::<u16>().is_ok()
    });
    if !valid {
        return Err(bad_address(text));
    }
    Ok(WorkerInfo {
        address: url.trim_end_matches('/').to_owned(),
        slots,
    })
}

/// Parses `NAME:PORT` for a DNS pool.
///
/// # Errors
/// [`Error::Input`] naming the text given.
pub fn parse_dns(text: &str, slots: u32, refresh: Duration) -> Result<RemotePool, Error> {
    let bad = || {
        Error::Input(format!(
            "workers DNS `{}` is not NAME:PORT",
            spec::quote(text)
        ))
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse::<u16>().map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad());
    }
    if slots == 0 {
        return Err(zero_slots(text));
    }
    Ok(RemotePool::Dns {
        host: host.to_owned(),
        port,
        slots,
        refresh,
    })
}

/// Resolves `host:port` to worker URLs, sorted so the pool order is stable.
async fn resolve(host: &str, port: u16, slots: u32) -> Vec<WorkerInfo> {
    let mut found: Vec<WorkerInfo> = match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => addrs
            .map(|a| WorkerInfo {
                address: format!("http://{a}"),
                slots,
            })
            .collect(),
        Err(e) => {
            tracing::warn!(host, port, error = %e, "resolving the worker pool failed");
            Vec::new()
        }
    };
    found.sort_by(|a, b| a.address.cmp(&b.address));
    found.dedup();
    found
}

impl RemotePool {
    /// Starts publishing the pool's workers. A DNS pool keeps resolving in a
    /// task until `stop` fires or every receiver is gone; a fixed list
    /// publishes once.
    pub async fn watch(&self, stop: CancellationToken) -> watch::Receiver<Vec<WorkerInfo>> {
        match self {
            RemotePool::Addresses(list) => watch::channel(list.clone()).1,
            RemotePool::Dns {
                host,
                port,
                slots,
                refresh,
            } => {
                let first = resolve(host, *port, *slots).await;
                let (tx, rx) = watch::channel(first);
                let (host, port, slots, refresh) = (host.clone(), *port, *slots, *refresh);
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            _ = tx.closed() => break,
                            _ = tokio::time::sleep(refresh) => {}
                        }
                        let now = resolve(&host, port, slots).await;
                        tx.send_if_modified(|current| {
                            if *current == now {
                                false
                            } else {
                                tracing::info!(workers = now.len(), "worker pool changed");
                                *current = now;
                                true
                            }
                        });
                    }
                });
                rx
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_worker_urls_with_slots() {
        assert_eq!(
            parse_worker("http://10.0.0.5:50051#4").expect("valid"),
            WorkerInfo {
                address: "http://10.0.0.5:50051".into(),
                slots: 4
            }
        );
        assert_eq!(
            parse_worker("127.0.0.1:9000").expect("valid").address,
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            parse_worker("http://host")
                .expect_err("no port")
                .to_string(),
            "worker `http://host` is not a worker URL: write it as http://HOST:PORT, optionally followed by #SLOTS"
        );
        assert_eq!(
            parse_worker("h:1#0").expect_err("zero slots").to_string(),
            "worker `h:1#0` has 0 slots: it must have at least 1"
        );
    }

    #[tokio::test]
    async fn dns_pool_resolves_localhost() {
        let pool = parse_dns("localhost:50051", 2, DEFAULT_DNS_REFRESH).expect("valid");
        let stop = CancellationToken::new();
        let rx = pool.watch(stop.clone()).await;
        let workers = rx.borrow().clone();
        stop.cancel();
        assert!(
            workers
                .iter()
                .any(|w| w.address == "http://127.0.0.1:50051" && w.slots == 2),
            "{workers:?}"
        );
        assert!(parse_dns("nohost", 1, DEFAULT_DNS_REFRESH).is_err());
    }
}
