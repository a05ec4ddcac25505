//! A worker that breaks the chunk protocol: a gRPC server here that relays
//! a real worker process but announces each chunk's early audio twice. The
//! coordinator must refuse the attempt with a message that says what the
//! worker did, retry the chunk elsewhere, and still write the bytes an
//! honest pool writes.

use std::pin::Pin;

use futures_util::{Stream, StreamExt as _, stream};
use montage_proto::v1::chunk_worker_client::ChunkWorkerClient;
use montage_proto::v1::chunk_worker_server::{ChunkWorker, ChunkWorkerServer};
use montage_proto::v1::{
    DescribeRequest, DescribeResponse, RenderChunkEvent, RenderChunkRequest, render_chunk_event,
};
use tonic::{Request, Response, Status};

use crate::kit::{events, render_command, render_on, sha256, start_worker};

/// Two chunks of a pattern with a soundtrack.
const SMALL: &str = r#"{"width":96,"height":54,"duration":48,"fps":"24"}"#;

/// Relays `upstream`, sending every `Audio` event twice.
struct AudioTwice {
    upstream: String,
}

impl AudioTwice {
    async fn client(&self) -> Result<ChunkWorkerClient<tonic::transport::Channel>, Status> {
        let client = ChunkWorkerClient::connect(self.upstream.clone())
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(client.max_decoding_message_size(64 << 20))
    }
}

type Events = Pin<Box<dyn Stream<Item = Result<RenderChunkEvent, Status>> + Send>>;

#[tonic::async_trait]
impl ChunkWorker for AudioTwice {
    type RenderChunkStream = Events;

    async fn render_chunk(
        &self,
        request: Request<RenderChunkRequest>,
    ) -> Result<Response<Events>, Status> {
        let upstream = self
            .client()
            .await?
            .render_chunk(request.into_inner())
            .await?
            .into_inner();
        let tampered = upstream.flat_map(|e| match e {
            Ok(ev) if matches!(ev.event, Some(render_chunk_event::Event::Audio(_))) => {
                stream::iter(vec![Ok(ev.clone()), Ok(ev)])
            }
            other => stream::iter(vec![other]),
        });
        Ok(Response::new(Box::pin(tampered)))
    }

    async fn describe(
        &self,
        request: Request<DescribeRequest>,
    ) -> Result<Response<DescribeResponse>, Status> {
        self.client().await?.describe(request.into_inner()).await
    }
}

/// Serves [`AudioTwice`] of `upstream` on loopback; returns its URL.
async fn serve_audio_twice(upstream: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = ChunkWorkerServer::new(AudioTwice {
        upstream: upstream.to_owned(),
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_audio_announced_twice_is_refused_and_the_chunk_retried_elsewhere() {
    // The relay has a worker of its own, so it is never refused for want
    // of a slot the honest worker's chunk holds.
    let (honest, relayed) = (start_worker(1), start_worker(1));
    let relay = serve_audio_twice(&relayed.url).await;
    let dir = tempfile::tempdir().expect("tempdir");

    // Only the lying worker: every attempt is refused, and the error says why.
    let failed = dir.path().join("failed.mp4");
    let mut c = render_command(&[], SMALL, 2, &failed, &["--worker", &relay]);
    c.args(["--retries", "2"]);
    let o = tokio::task::spawn_blocking(move || c.output().expect("run"))
        .await
        .expect("join");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a render on a lying worker succeeded");
    assert!(
        stderr.contains("the worker announced its audio twice"),
        "{stderr}"
    );
    assert!(!failed.exists(), "a failed render left an output");

    // Beside an honest worker: the refused chunks are rendered there, to
    // the bytes the honest worker alone gives.
    let (mixed, alone) = (dir.path().join("mixed.mp4"), dir.path().join("alone.mp4"));
    let (m, a) = (mixed.clone(), alone.clone());
    let url = honest.url.clone();
    let (o, honest) = tokio::task::spawn_blocking(move || {
        // Retries go to the honest worker when it is free, else back to the
        // liar: enough of them that the render cannot run out.
        let workers = ["--worker", &relay, "--worker", &url, "--retries", "8"];
        let mut c = render_command(&[], SMALL, 2, &m, &workers);
        let mixed = c.output().expect("run");
        let alone = render_on(&[&honest], SMALL, 2, &a, &[]);
        assert!(
            alone.status.success(),
            "{}",
            String::from_utf8_lossy(&alone.stderr)
        );
        (mixed, honest)
    })
    .await
    .expect("join");
    drop((honest, relayed));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let retried = events(&stdout, "chunk_retried");
    assert!(
        retried
            .iter()
            .any(|l| l.contains("announced its audio twice")),
        "no chunk was refused from the lying worker:\n{stdout}"
    );
    assert_eq!(sha256(&mixed), sha256(&alone));
}
