use super::*;
use proptest::prelude::*;

fn fps(num: u32, den: u32) -> Fps {
    Fps::new(num, den).expect("valid fps")
}

/// Checks a plan's chunk sizes (output frames) and owned frame ranges.
#[track_caller]
fn check(request: PlanRequest, expected: &[(u64, u64, u64)]) {
    let p = plan(&request).expect("plan");
    let got: Vec<(u64, u64, u64)> = p
        .chunks()
        .iter()
        .map(|c| (c.frames().first.0, c.frames().last.0, c.frame_count()))
        .collect();
    assert_eq!(got, expected, "{request:?}");
}

#[track_caller]
fn check_err(request: PlanRequest, message: &str) {
    let err = plan(&request).expect_err("should fail");
    assert_eq!(err.to_string(), message);
}

#[test]
fn splits_into_equal_chunks_with_a_shorter_last() {
    let f = fps(30, 1);
    check(
        PlanRequest::new(10, f, ChunkSpec::Count(4)),
        &[(0, 2, 3), (3, 5, 3), (6, 8, 3), (9, 9, 1)],
    );
    check(
        PlanRequest::new(10, f, ChunkSpec::FramesPerChunk(4)),
        &[(0, 3, 4), (4, 7, 4), (8, 9, 2)],
    );
    check(PlanRequest::new(10, f, ChunkSpec::Count(1)), &[(0, 9, 10)]);
    check(
        PlanRequest::new(100, f, ChunkSpec::Count(4)).with_frame_range(10..=19),
        &[(10, 12, 3), (13, 15, 3), (16, 18, 3), (19, 19, 1)],
    );
}

#[test]
fn more_chunks_than_frames_gives_one_frame_chunks() {
    check(
        PlanRequest::new(3, fps(25, 1), ChunkSpec::Count(16)),
        &[(0, 0, 1), (1, 1, 1), (2, 2, 1)],
    );
    check(
        PlanRequest::new(3, fps(25, 1), ChunkSpec::FramesPerChunk(99)),
        &[(0, 2, 3)],
    );
}

#[test]
fn minimum_frames_per_chunk_makes_fewer_chunks() {
    check(
        PlanRequest::new(100, fps(30, 1), ChunkSpec::Count(50)).with_min_frames_per_chunk(30),
        &[(0, 29, 30), (30, 59, 30), (60, 89, 30), (90, 99, 10)],
    );
}

#[test]
fn auto_gives_a_few_chunks_per_slot_but_none_too_short() {
    let sizes = |r: PlanRequest| -> Vec<u64> {
        plan(&r)
            .expect("plan")
            .chunks()
            .iter()
            .map(Chunk::frame_count)
            .collect()
    };
    // A 10 s promo on 2 slots: 3 per slot would be 50 frames, under the
    // 2 s minimum (60 frames at 30 fps); 5 chunks of 60 would leave one
    // slot idle while the fifth renders, so 2 per slot: 4 chunks of 75.
    assert_eq!(
        sizes(PlanRequest::new(300, fps(30, 1), ChunkSpec::Auto).with_slots(2)),
        [75; 4]
    );
    // 3 slots: 5 fit the minimum, rounded down to 3 (one each).
    assert_eq!(
        sizes(PlanRequest::new(300, fps(30, 1), ChunkSpec::Auto).with_slots(3)),
        [100; 3]
    );
    // A minute on 4 slots: 12 chunks of 150 frames.
    assert_eq!(
        sizes(PlanRequest::new(1800, fps(30, 1), ChunkSpec::Auto).with_slots(4)),
        [150; 12]
    );
    // Shorter than the minimum: one chunk. 0 slots count as 1.
    assert_eq!(
        sizes(PlanRequest::new(45, fps(30, 1), ChunkSpec::Auto).with_slots(0)),
        [45]
    );
    // The minimum is in output frames: 2 s at 30000/1001 is 60 frames
    // (59.94 rounded up), at every 3rd frame of 30 fps 20 frames. Fewer
    // chunks than slots are equal too, not two of the minimum and a stub.
    assert_eq!(
        sizes(PlanRequest::new(130, fps(30_000, 1001), ChunkSpec::Auto).with_slots(8)),
        [65, 65]
    );
    assert_eq!(
        sizes(
            PlanRequest::new(120, fps(30, 1), ChunkSpec::Auto)
                .with_slots(8)
                .with_every_nth_frame(3)
        ),
        [20, 20]
    );
}

#[test]
fn every_nth_frame_owns_the_frames_between() {
    let p = plan(
        &PlanRequest::new(10, fps(30, 1), ChunkSpec::FramesPerChunk(2)).with_every_nth_frame(3),
    )
    .expect("plan");
    // Output frames 0,3,6,9 → chunks {0,3} and {6,9}.
    let rendered: Vec<Vec<u64>> = p
        .chunks()
        .iter()
        .map(|c| c.rendered_frames().map(|f| f.0).collect())
        .collect();
    assert_eq!(rendered, vec![vec![0, 3], vec![6, 9]]);
    assert_eq!(p.chunks()[0].frames(), FrameRange::new(0, 5).expect("r"));
    assert_eq!(p.chunks()[1].frames(), FrameRange::new(6, 9).expect("r"));
    assert_eq!(p.output_fps(), fps(10, 1));
    assert_eq!(p.output_frames(), 4);
    assert_eq!(p.chunks()[1].first_output_frame(), 2);
}

#[test]
fn audio_spans_at_ntsc_never_drift() {
    // 37 frames at 30000/1001 are 59259.2 samples: four spans of 59259, then
    // one of 59260, so the total never drifts from S(N).
    let p = plan(&PlanRequest::new(
        37 * 6,
        fps(30_000, 1001),
        ChunkSpec::FramesPerChunk(37),
    ))
    .expect("plan");
    let lens: Vec<u64> = p.chunks().iter().map(|c| c.samples().len()).collect();
    assert_eq!(lens, vec![59_259, 59_259, 59_259, 59_259, 59_260, 59_259]);
    assert_eq!(p.samples().len(), 37 * 6 * 48_000 * 1001 / 30_000);
}

#[test]
fn bad_requests_name_the_values() {
    let f = fps(30, 1);
    check_err(
        PlanRequest::new(300, f, ChunkSpec::Count(0)),
        "chunks 0 is invalid: ask for at least 1 chunk",
    );
    check_err(
        PlanRequest::new(300, f, ChunkSpec::FramesPerChunk(0)),
        "frames per chunk 0 is invalid: ask for at least 1 frame per chunk",
    );
    check_err(
        PlanRequest::new(0, f, ChunkSpec::Count(2)),
        "duration 0 frames is invalid: a composition must have at least 1 frame",
    );
    #[allow(clippy::reversed_empty_ranges)] // the inverted range is the input under test
    let inverted = PlanRequest::new(300, f, ChunkSpec::Count(2)).with_frame_range(20..=10);
    check_err(
        inverted,
        "frame range 20-10 is inverted: the first frame must not be after the last",
    );
    check_err(
        PlanRequest::new(300, f, ChunkSpec::Count(2)).with_frame_range(250..=300),
        "frame range 250-300 is outside the composition: frames run 0-299 (300 frames)",
    );
    check_err(
        PlanRequest::new(300, f, ChunkSpec::Count(2)).with_every_nth_frame(0),
        "every_nth_frame 0 is invalid: it must be at least 1 (1 keeps every frame)",
    );
    check_err(
        PlanRequest::new(300, f, ChunkSpec::Count(2)).with_sample_rate(0),
        "sample rate 0 is invalid: it must be at least 1 Hz (48000 is the default)",
    );
    check_err(
        PlanRequest::new(300, f, ChunkSpec::Count(2)).with_min_frames_per_chunk(0),
        "minimum frames per chunk 0 is invalid: it must be at least 1",
    );
    assert_eq!(
        Fps::new(0, 1).expect_err("zero fps").to_string(),
        "fps 0/1 is invalid: numerator and denominator must both be at least 1"
    );
}

#[test]
fn chunks_too_long_or_too_large_are_refused_naming_the_numbers() {
    // fps 1/2147483647 (refused by compositions, but the planner must not
    // trust that): frame 0 alone would own 1.0e14 samples.
    check_err(
        PlanRequest::new(1, fps(1, 2_147_483_647), ChunkSpec::Count(1)),
        "the output frame rate 1/2147483647 fps (fps 1/2147483647 ÷ every_nth_frame 1) is too slow: an output frame may last at most 1001 seconds (1/1001 fps)",
    );
    let huge = Chunk::from_parts(ChunkIndex(0), 0..=0, 1, 0, fps(1, 2_147_483_647), 48_000)
        .expect("consistent");
    assert_eq!(
        huge.check_size(48_000, None)
            .expect_err("too long")
            .to_string(),
        "chunk 0 (frames 0-0) owns 103079215056000 audio samples at 48000 Hz; a chunk may own at most 172800000 (one hour at 48000 Hz): split the render into more chunks",
    );
    // Two hours at 30 fps in one chunk; in two chunks it fits.
    let two_hours = 2 * 3600 * 30;
    check_err(
        PlanRequest::new(two_hours, fps(30, 1), ChunkSpec::Count(1)),
        "chunk 0 (frames 0-215999) owns 345600000 audio samples at 48000 Hz; a chunk may own at most 172800000 (one hour at 48000 Hz): split the render into more chunks",
    );
    assert!(
        plan(&PlanRequest::new(
            two_hours,
            fps(30, 1),
            ChunkSpec::Count(2)
        ))
        .is_ok()
    );
    // The slowest output frame (1001 s) still fits one per chunk.
    assert!(plan(&PlanRequest::new(3, fps(1, 1001), ChunkSpec::Count(3))).is_ok());

    // 8192x8192 4:4:4 frames (201 MB raw) for 400 frames: 80 GB.
    let cost = ChunkCost {
        frame_bytes: 8192 * 8192 * 3,
        sample_bytes: 8,
    };
    check_err(
        PlanRequest::new(400, fps(30, 1), ChunkSpec::Count(1)).with_cost(cost),
        "chunk 0 (frames 0-399) would write about 80535756800 bytes (400 frames of up to 201326592 bytes, 640000 samples of 8 bytes); a chunk may write at most 64000000000: split the render into more chunks",
    );
    assert!(plan(&PlanRequest::new(400, fps(30, 1), ChunkSpec::Count(2)).with_cost(cost)).is_ok());
}

#[test]
fn every_nth_frame_may_not_make_output_frames_longer_than_1001_seconds() {
    check_err(
        PlanRequest::new(100_000, fps(30, 1), ChunkSpec::Count(1)).with_every_nth_frame(40_000),
        "the output frame rate 3/4000 fps (fps 30 ÷ every_nth_frame 40000) is too slow: an output frame may last at most 1001 seconds (1/1001 fps)",
    );
    check_err(
        PlanRequest::new(10, fps(1, 1001), ChunkSpec::Count(1)).with_every_nth_frame(2),
        "the output frame rate 1/2002 fps (fps 1/1001 ÷ every_nth_frame 2) is too slow: an output frame may last at most 1001 seconds (1/1001 fps)",
    );
    // 30 fps ÷ 30030 is exactly 1/1001 fps: allowed.
    assert!(
        plan(
            &PlanRequest::new(100_000, fps(30, 1), ChunkSpec::Count(1))
                .with_every_nth_frame(30_030)
        )
        .is_ok()
    );
}

#[test]
fn from_parts_matches_the_plan() {
    let f = fps(30_000, 1001);
    let p = plan(&PlanRequest::new(1000, f, ChunkSpec::Count(7)).with_frame_range(100..=900))
        .expect("plan");
    for c in p.chunks() {
        let again = Chunk::from_parts(
            c.index(),
            c.frames().first.0..=c.frames().last.0,
            c.every_nth_frame(),
            c.composition_start().0,
            f,
            p.sample_rate(),
        )
        .expect("consistent");
        assert_eq!(&again, c);
    }
}

/// Chunk 2 of frames 0-59 every 2nd frame, in 10-frame chunks, as JSON with
/// `field` replaced by `value`.
fn chunk_json_with(field: &str, value: serde_json::Value) -> String {
    let p = plan(
        &PlanRequest::new(60, fps(30, 1), ChunkSpec::FramesPerChunk(5)).with_every_nth_frame(2),
    )
    .expect("plan");
    let mut json = serde_json::to_value(p.chunks()[2]).expect("serialize");
    json[field] = value;
    json.to_string()
}

#[track_caller]
fn check_refused(field: &str, value: serde_json::Value, message: &str) {
    let json = chunk_json_with(field, value);
    let err = serde_json::from_str::<Chunk>(&json).expect_err(&json);
    // serde_json adds where in the text it stopped (when it knows): not
    // part of our message.
    let text = err.to_string();
    let location = format!(" at line {} column {}", err.line(), err.column());
    let ours = text.strip_suffix(&location).unwrap_or(&text);
    assert_eq!(ours, message, "{json}");
}

#[test]
fn a_chunk_deserializes_only_when_its_fields_agree() {
    // The planned chunk reads back as itself.
    let json = chunk_json_with("index", serde_json::json!(2));
    let chunk: Chunk = serde_json::from_str(&json).expect("planned chunk");
    assert_eq!(
        (
            chunk.frames(),
            chunk.first_output_frame(),
            chunk.frame_count()
        ),
        (FrameRange::new(20, 29).expect("range"), 10, 5)
    );
    check_refused(
        "frames",
        serde_json::json!({"first": 29, "last": 20}),
        "frame range is inverted: first 29 is after last 20",
    );
    check_refused(
        "samples",
        serde_json::json!({"start": 48000, "end": 32000}),
        "sample span is inverted: end 32000 is before start 48000",
    );
    // Found by combine's manifest fuzzer: `last - first + 1` overflowed.
    check_refused(
        "frames",
        serde_json::json!({"first": 0, "last": u64::MAX}),
        "chunk 2: frames.last 18446744073709551615 is invalid: the frame after a chunk's last must exist: the last frame may be at most 18446744073709551614",
    );
    assert!(Chunk::from_parts(ChunkIndex(0), 0..=u64::MAX, 1, 0, fps(30, 1), 48_000).is_err());
    check_refused(
        "every_nth_frame",
        serde_json::json!(0),
        "chunk 2: every_nth_frame 0 is invalid: it must be at least 1 (1 keeps every frame)",
    );
    check_refused(
        "composition_start",
        serde_json::json!(21),
        "chunk 2: composition_start 21 is invalid: it is after the chunk's first frame (frames 20-29)",
    );
    check_refused(
        "first_output_frame",
        serde_json::json!(9),
        "chunk 2: first_output_frame 9 is invalid: frames 20-29 every 2 from composition start 0 make it 10",
    );
    check_refused(
        "output_frames",
        serde_json::json!(10),
        "chunk 2: output_frames 10 is invalid: frames 20-29 every 2 make it 5",
    );
}

fn common_fps() -> impl Strategy<Value = Fps> {
    prop::sample::select(vec![
        (24u32, 1u32),
        (25, 1),
        (30, 1),
        (30_000, 1001),
        (60_000, 1001),
        (60, 1),
    ])
    .prop_map(|(n, d)| fps(n, d))
}

fn chunk_spec() -> impl Strategy<Value = ChunkSpec> {
    prop_oneof![
        (1u32..64).prop_map(ChunkSpec::Count),
        (1u64..500).prop_map(ChunkSpec::FramesPerChunk),
    ]
}

/// A composition, a valid range in it, a chunk spec, an optional minimum and
/// an every-nth-frame value.
fn request() -> impl Strategy<Value = PlanRequest> {
    (
        1u64..20_000,
        common_fps(),
        chunk_spec(),
        prop::option::of(1u64..100),
        prop::sample::select(vec![1u32, 1, 1, 2, 3, 5]),
        any::<(u64, u64)>(),
        any::<bool>(),
    )
        .prop_map(|(duration, f, spec, min, nth, (x, y), whole)| {
            let mut r = PlanRequest::new(duration, f, spec).with_every_nth_frame(nth);
            if !whole {
                let (a, b) = (x % duration, y % duration);
                r = r.with_frame_range(a.min(b)..=a.max(b));
            }
            if let Some(m) = min {
                r = r.with_min_frames_per_chunk(m);
            }
            r
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn chunks_tile_the_range_exactly(r in request()) {
        let p = plan(&r).expect("valid request");
        let (first, last) = (p.range().first.0, p.range().last.0);
        let mut next = first;
        for (i, c) in p.chunks().iter().enumerate() {
            prop_assert_eq!(c.index().0 as usize, i);
            prop_assert_eq!(c.frames().first.0, next, "gap or overlap before chunk {}", i);
            prop_assert!(c.frame_count() >= 1, "empty chunk {}", i);
            prop_assert_eq!(c.composition_start().0, first);
            next = c.frames().last.0 + 1;
        }
        prop_assert_eq!(next, last + 1);
        let rendered: Vec<u64> = p.chunks().iter().flat_map(|c| c.rendered_frames()).map(|f| f.0).collect();
        let expected: Vec<u64> = (first..=last).step_by(r.every_nth_frame as usize).collect();
        prop_assert_eq!(rendered, expected);
    }

    #[test]
    fn sizes_are_equal_but_the_last_which_is_never_longer(r in request()) {
        let p = plan(&r).expect("valid request");
        let k = p.frames_per_chunk();
        let n = p.chunks().len();
        for c in &p.chunks()[..n - 1] {
            prop_assert_eq!(c.frame_count(), k);
        }
        prop_assert!(p.chunks()[n - 1].frame_count() <= k);
        prop_assert!(p.chunks()[n - 1].frame_count() >= 1);
        if let ChunkSpec::Count(asked) = r.chunks {
            prop_assert!(n as u64 <= u64::from(asked));
        }
        if let Some(min) = r.min_frames_per_chunk {
            prop_assert!(k >= min.min(p.output_frames()));
        }
        let total: u64 = p.chunks().iter().map(|c| c.frame_count()).sum();
        prop_assert_eq!(total, p.output_frames());
    }

    #[test]
    fn planned_chunks_survive_a_json_round_trip(r in request()) {
        let p = plan(&r).expect("valid request");
        for c in p.chunks() {
            let text = serde_json::to_string(c).expect("serialize");
            let back: Chunk = serde_json::from_str(&text).expect("a planned chunk reads back");
            prop_assert_eq!(&back, c);
        }
    }

    #[test]
    fn audio_spans_tile_the_sample_range_exactly(r in request()) {
        let p = plan(&r).expect("valid request");
        let rate = u128::from(r.sample_rate);
        let s = |f: u64| (u128::from(f) * rate * u128::from(r.fps.den()) / u128::from(r.fps.num())) as u64;
        let (first, last) = (p.range().first.0, p.range().last.0);
        prop_assert_eq!(p.samples().start.0, s(first));
        prop_assert_eq!(p.samples().end.0, s(last + 1));
        let mut next = s(first);
        let mut total = 0;
        for c in p.chunks() {
            prop_assert_eq!(c.samples().start.0, next);
            prop_assert_eq!(c.samples().start.0, s(c.frames().first.0));
            prop_assert_eq!(c.samples().end.0, s(c.frames().last.0 + 1));
            next = c.samples().end.0;
            total += c.samples().len();
        }
        prop_assert_eq!(next, s(last + 1));
        prop_assert_eq!(total, s(last + 1) - s(first));
    }
}
