//! Fuzzing that stays: bytes a foreign client or a broken worker may send,
//! decoded as each wire message and converted, must give a value or a
//! `FieldError`, never a panic; what is accepted must survive a second trip
//! through the wire unchanged. Each run tries the corpus in
//! `tests/fixtures/fuzz/wire/` (seeds, and every input that once crashed),
//! mutations of it, random bytes, and wire messages with extreme numbers.
//! `FUZZ_CASES=20000 cargo test -p montage-proto fuzz` searches longer;
//! `FUZZ_WRITE_SEEDS=1` rewrites the seed files.

use std::path::PathBuf;

use chunker::Chunk;
use composition::CompositionMeta;
use montage_proto::convert::{Described, WireChunkRequest};
use montage_proto::v1 as pb;
use proptest::prelude::*;
use proptest::sample::Index;
use prost::Message;
use spec::{ChunkEvent, DescribeRequest};
use timebase::Fps;

use crate::strategies::{chunk_request, describe_request, event, meta, renderer};

/// Cases per property per run: enough for seconds in CI.
fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256)
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/fuzz/wire")
}

/// The corpus: every file's bytes, by name.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(corpus_dir())
        .expect("the wire corpus")
        .map(|e| {
            let path = e.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("read"))
        })
        .collect();
    files.sort();
    files
}

/// What a worker and a coordinator do with bytes off the wire, up to the
/// point where rendering would start.
fn exercise(bytes: &[u8]) {
    if let Ok(wire) = pb::RenderChunkRequest::decode(bytes)
        && let Ok(accepted) = WireChunkRequest::try_from(wire)
    {
        span_math(&accepted);
        let again = WireChunkRequest::try_from(pb::RenderChunkRequest::from(&accepted))
            .expect("an accepted request converts again");
        assert_eq!(again, accepted, "a second trip changed the request");
    }
    if let Ok(wire) = pb::DescribeRequest::decode(bytes)
        && let Ok(accepted) = DescribeRequest::try_from(wire)
    {
        let again = DescribeRequest::try_from(pb::DescribeRequest::from(&accepted))
            .expect("an accepted request converts again");
        assert_eq!(again, accepted);
    }
    if let Ok(wire) = pb::RenderChunkEvent::decode(bytes)
        && let Ok(event) = ChunkEvent::try_from(wire)
    {
        let again = ChunkEvent::try_from(pb::RenderChunkEvent::from(event.clone()))
            .expect("an accepted event converts again");
        assert_eq!(again, event);
    }
    if let Ok(wire) = pb::DescribeResponse::decode(bytes)
        && let Ok(described) = Described::try_from(wire)
    {
        let again = Described::try_from(pb::DescribeResponse::from(&described))
            .expect("an accepted answer converts again");
        assert_eq!(again, described);
    }
    if let Ok(wire) = pb::CompositionMeta::decode(bytes) {
        let _ = CompositionMeta::try_from(wire);
    }
}

/// The span arithmetic a worker does with an accepted request, at the
/// frame rates compositions allow.
fn span_math(w: &WireChunkRequest) {
    let span = w.request.span;
    let _ = span.output_frames();
    let cost = spec::chunk_cost(&w.request.video, 8192, 8192, w.request.pcm_format);
    for (num, den) in [(240, 1), (30_000, 1001), (1, 1)] {
        let fps = Fps::new(num, den).expect("fps");
        if let Ok(chunk) = Chunk::from_parts(
            span.index,
            span.frames.first.0..=span.frames.last.0,
            span.every_nth_frame,
            span.composition_start,
            fps,
            composition::SAMPLE_RATE,
        ) {
            let _ = chunk.check_size(composition::SAMPLE_RATE, Some(cost));
            let _ = chunk.rendered_frames().next_back();
            let _ = chunk.samples().len();
        }
        if let Ok(output) = fps.every_nth(span.every_nth_frame) {
            let _ = chunker::check_output_fps(fps, span.every_nth_frame, output);
            let _ = output.ticks_per_frame(timebase::MPEG_TS_CLOCK_HZ);
        }
    }
}

/// One edit of a corpus input.
#[derive(Debug, Clone)]
enum Edit {
    Flip(Index, u8),
    Insert(Index, u8),
    Remove(Index),
    Truncate(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<Index>().prop_map(Edit::Remove),
        any::<Index>().prop_map(Edit::Truncate),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        if bytes.is_empty() {
            bytes.push(0);
        }
        match e {
            Edit::Flip(i, b) => {
                let at = i.index(bytes.len());
                bytes[at] ^= b;
            }
            Edit::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), *b),
            Edit::Remove(i) => {
                bytes.remove(i.index(bytes.len()));
            }
            Edit::Truncate(i) => bytes.truncate(i.index(bytes.len())),
        }
    }
    bytes
}

/// Numbers at the edges: where overflows live.
fn extreme_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(u64::from(u32::MAX)),
        Just(u64::from(u32::MAX) + 1),
        Just(composition::MAX_DURATION_FRAMES),
        Just(composition::MAX_DURATION_FRAMES - 1),
        any::<u64>(),
    ]
}

fn extreme_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(u32::MAX),
        Just(u32::MAX - 1),
        Just(1001),
        any::<u32>()
    ]
}

/// Wire requests whose numbers are extreme and whose fields may be unset.
/// Frame ranges are mostly in order and the render's start mostly before
/// them, so cases get past the first checks to the arithmetic behind.
fn hostile_request() -> impl Strategy<Value = pb::RenderChunkRequest> {
    (
        chunk_request(),
        (
            extreme_u64(),
            extreme_u64(),
            extreme_u64(),
            prop::bool::weighted(0.9),
        ),
        prop::option::of(extreme_u32()),
        // Each video number replaced one time in four: most cases stay
        // valid enough to reach the span arithmetic.
        prop::collection::vec(
            prop::option::weighted(0.25, prop::option::of(extreme_u32())),
            4,
        ),
        (
            prop_oneof![
                Just(None),
                Just(Some(48_000)),
                prop::option::of(extreme_u32())
            ],
            prop_oneof![Just(None), Just(Some(2)), prop::option::of(extreme_u32())],
            prop_oneof![0..3i32, any::<i32>()],
        ),
        prop::collection::vec(prop::bool::weighted(0.1), 4),
    )
        .prop_map(
            |(request, (a, b, start, ordered), nth, video, audio, unset)| {
                let mut wire = pb::RenderChunkRequest::from(&WireChunkRequest {
                    request,
                    renderer: None,
                    audio_first: false,
                });
                let (first, last) = if ordered {
                    (a.min(b), a.max(b))
                } else {
                    (a, b)
                };
                wire.frames = Some(pb::FrameRange { first, last });
                wire.composition_start = if ordered { start.min(first) } else { start };
                wire.every_nth_frame = nth;
                if let Some(v) = wire.video.as_mut() {
                    for (field, value) in [
                        &mut v.crf,
                        &mut v.keyint,
                        &mut v.bframes,
                        &mut v.encoder_threads,
                    ]
                    .into_iter()
                    .zip(video)
                    {
                        if let Some(value) = value {
                            *field = value;
                        }
                    }
                }
                wire.audio = Some(pb::AudioSettings {
                    sample_rate: audio.0,
                    channels: audio.1,
                    pcm_format: audio.2,
                });
                if unset[0] {
                    wire.source = None;
                }
                if unset[1] {
                    wire.output = None;
                }
                if unset[2] {
                    wire.video = None;
                }
                if unset[3] {
                    wire.frames = None;
                }
                wire
            },
        )
}

/// Valid messages of every type, encoded: the seeds mutations start from.
fn seed_messages() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (chunk_request(), prop::option::of(renderer())).prop_map(|(request, renderer)| {
            pb::RenderChunkRequest::from(&WireChunkRequest {
                request,
                renderer,
                audio_first: false,
            })
            .encode_to_vec()
        }),
        describe_request().prop_map(|r| pb::DescribeRequest::from(&r).encode_to_vec()),
        event().prop_map(|e| pb::RenderChunkEvent::from(e).encode_to_vec()),
        (meta(), renderer()).prop_map(|(meta, renderer)| {
            pb::DescribeResponse::from(&Described {
                meta,
                renderer,
                gif_palette: None,
            })
            .encode_to_vec()
        }),
    ]
}

#[test]
fn the_corpus_never_panics() {
    if std::env::var_os("FUZZ_WRITE_SEEDS").is_some() {
        write_seeds();
    }
    let corpus = corpus();
    assert!(corpus.len() >= 4, "the wire corpus is missing");
    for (name, bytes) in corpus {
        let outcome = std::panic::catch_unwind(|| exercise(&bytes));
        assert!(outcome.is_ok(), "corpus input {name} panicked");
    }
}

/// A valid request for frames `first..=last` of a registered composition.
fn request_for_frames(first: u64, last: u64) -> pb::RenderChunkRequest {
    let mut wire = pb::RenderChunkRequest::from(&WireChunkRequest {
        request: spec::ChunkRequest {
            job_id: "fuzz".into(),
            source: spec::SourceSpec::Registered,
            composition_id: "test-pattern".into(),
            props: spec::Props::new(),
            span: spec::ChunkSpan {
                index: chunker::ChunkIndex(0),
                frames: timebase::FrameRange::new(0, 0).expect("0-0"),
                composition_start: 0,
                every_nth_frame: 1,
            },
            video: spec::VideoSettings::default(),
            pcm_format: spec::PcmFormat::F32le,
            target: spec::ArtifactTarget::Inline,
            frames_to: spec::FrameSink::Encode,
        },
        renderer: None,
        audio_first: false,
    });
    wire.frames = Some(pb::FrameRange { first, last });
    wire
}

/// Found by `requests_with_extreme_numbers_never_panic`: frames
/// `0..=u64::MAX` were accepted, and a worker's first span computation
/// (`last - first + 1`) overflowed. Kept in the corpus as
/// `crash-frames-0-to-u64-max.bin`.
#[test]
fn frames_beyond_any_composition_are_refused_naming_the_field() {
    let err = WireChunkRequest::try_from(request_for_frames(0, u64::MAX)).expect_err("refused");
    assert_eq!(
        err.to_string(),
        "field `frames`: last frame 18446744073709551615 is beyond the longest composition (5184000 frames)"
    );
    assert!(WireChunkRequest::try_from(request_for_frames(0, 5_183_999)).is_ok());
}

/// Writes one seed of each message type into the corpus, and the inputs
/// that once crashed.
fn write_seeds() {
    std::fs::write(
        corpus_dir().join("crash-frames-0-to-u64-max.bin"),
        request_for_frames(0, u64::MAX).encode_to_vec(),
    )
    .expect("write crash");
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut one = |name: &str, s: BoxedStrategy<Vec<u8>>| {
        let bytes = s.new_tree(&mut runner).expect("a value").current();
        std::fs::write(corpus_dir().join(name), bytes).expect("write seed");
    };
    one(
        "seed-render-chunk-request.bin",
        chunk_request()
            .prop_map(|request| {
                pb::RenderChunkRequest::from(&WireChunkRequest {
                    request,
                    renderer: None,
                    audio_first: false,
                })
                .encode_to_vec()
            })
            .boxed(),
    );
    one(
        "seed-describe-request.bin",
        describe_request()
            .prop_map(|r| pb::DescribeRequest::from(&r).encode_to_vec())
            .boxed(),
    );
    one(
        "seed-chunk-event.bin",
        event()
            .prop_map(|e| pb::RenderChunkEvent::from(e).encode_to_vec())
            .boxed(),
    );
    one(
        "seed-describe-response.bin",
        (meta(), renderer())
            .prop_map(|(meta, renderer)| {
                pb::DescribeResponse::from(&Described {
                    meta,
                    renderer,
                    gif_palette: None,
                })
                .encode_to_vec()
            })
            .boxed(),
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        exercise(&bytes);
    }

    #[test]
    fn mutated_corpus_inputs_never_panic(
        pick in any::<Index>(),
        edits in prop::collection::vec(edit(), 1..8),
    ) {
        let corpus = corpus();
        let (_, bytes) = pick.get(&corpus);
        exercise(&apply(bytes.clone(), &edits));
    }

    #[test]
    fn mutated_valid_messages_never_panic(
        seed in seed_messages(),
        edits in prop::collection::vec(edit(), 0..6),
    ) {
        exercise(&apply(seed, &edits));
    }

    #[test]
    fn requests_with_extreme_numbers_never_panic(wire in hostile_request()) {
        exercise(&wire.encode_to_vec());
    }
}
