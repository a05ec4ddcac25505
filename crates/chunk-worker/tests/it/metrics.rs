//! Prometheus metrics scraped over real HTTP from a real worker process
//! while it works.

use serde_json::json;

use crate::kit::{self, Worker};

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

async fn scrape(url: &str) -> String {
    let response = reqwest::get(url).await.expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    response.text().await.expect("body")
}

/// The value of the sample whose line starts with `series` (name and
/// labels as Prometheus prints them), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_as_chunks_render_and_fail() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let w = Worker::start(&["--slots", "2", "--metrics-listen", &listen]);
    let url = format!("http://{listen}/metrics");
    let before = scrape(&url).await;
    assert_eq!(
        sample(&before, "montage_worker_slots"),
        Some(2.0),
        "{before}"
    );
    assert_eq!(sample(&before, "montage_worker_slots_busy"), Some(0.0));
    assert_eq!(sample(&before, "montage_worker_frames_total"), Some(0.0));
    assert!(sample(&before, "montage_worker_resident_memory_bytes").is_some_and(|b| b > 1e6));

    let mut client = w.client().await;
    let props = json!({"width": 64, "height": 36, "fps": "30", "duration": 30});
    kit::render(&mut client, kit::request(props, 0, 19, 0, None))
        .await
        .expect("renders");
    let mut bad = kit::request(json!({}), 0, 1, 0, None);
    bad.composition_id = "nope".into();
    kit::render(&mut client, bad)
        .await
        .expect_err("unknown composition");

    let after = scrape(&url).await;
    assert_eq!(
        sample(
            &after,
            r#"montage_worker_chunks_total{outcome="done",class=""}"#
        ),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            r#"montage_worker_chunks_total{outcome="failed",class="input"}"#
        ),
        Some(1.0),
        "{after}"
    );
    assert_eq!(sample(&after, "montage_worker_frames_total"), Some(20.0));
    assert_eq!(
        sample(
            &after,
            r#"montage_worker_stage_seconds_count{stage="encode"}"#
        ),
        Some(1.0),
        "{after}"
    );
    assert_eq!(sample(&after, "montage_worker_slots_busy"), Some(0.0));
}
