//! The same request gives the same bytes whatever the allocator hands out:
//! workers whose `malloc` fills new memory with different bytes
//! (`glibc.malloc.perturb`) and reuses freed memory as
//! `chunk_worker::reuse_freed_memory` makes it (one arena, blocks up to
//! 32 MiB from the heap, nothing trimmed) render chunks after other chunks
//! left their memory behind, and every result must equal a plain worker's.
//! Fresh pages from the kernel are zero and would hide a read of memory
//! nobody wrote; these are not.

use serde_json::json;

use crate::kit::{self, Worker};

/// The policy of `reuse_freed_memory`, plus a perturbation byte.
fn tunables(perturb: u8) -> String {
    format!(
        "glibc.malloc.perturb={perturb}:glibc.malloc.arena_max=1:\
         glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"
    )
}

/// (video, audio) sha256 of each request rendered in turn on `w`.
async fn render_all(
    w: &Worker,
    requests: &[montage_proto::v1::RenderChunkRequest],
) -> Vec<(String, String)> {
    let mut client = w.client().await;
    let mut out = Vec::new();
    for req in requests {
        let c = kit::render(&mut client, req.clone()).await.expect("render");
        out.push((kit::sha256(&c.ts), kit::sha256(&c.pcm)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perturbed_and_reused_memory_gives_the_same_bytes() {
    // Sizes whose rows are padded in FFmpeg's frames (84-sample chroma rows
    // in 96 bytes) and whose macroblock rows are not a multiple of 8, after
    // a larger chunk that leaves its memory behind; the last request is the
    // first again, on memory the others used.
    let small = json!({"width": 168, "height": 94, "fps": "30", "duration": 60});
    let large = json!({"width": 320, "height": 180, "fps": "30000/1001", "duration": 30});
    let requests = [
        kit::request(large.clone(), 0, 29, 0, None),
        kit::request(small.clone(), 10, 39, 0, None),
        kit::request(small.clone(), 40, 59, 40, None),
        kit::request(large, 0, 29, 0, None),
    ];
    let plain = Worker::start(&[]);
    let expected = render_all(&plain, &requests).await;
    assert_eq!(
        expected[0], expected[3],
        "the same chunk twice on one worker"
    );
    for perturb in [0xA5, 0x5A] {
        let env = [("GLIBC_TUNABLES", tunables(perturb))];
        let w = Worker::start_with_env(&["--slots", "2"], &env);
        assert_eq!(
            render_all(&w, &requests).await,
            expected,
            "malloc perturbation byte {perturb:#x}"
        );
    }
}
