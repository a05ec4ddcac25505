//! Every request and response type through its wire message and back:
//! what one side sends is exactly what the other reads.

use composition::CompositionMeta;
use montage_proto::convert::{Described, WireChunkRequest};
use montage_proto::v1 as pb;
use proptest::prelude::*;
use prost::Message;
use spec::{ArtifactTarget, ChunkEvent, DescribeRequest, SourceSpec, VideoSettings};

use crate::strategies::{
    chunk_request, describe_request, event, meta, renderer, source, target, video,
};

/// Encodes `wire` to bytes and decodes it again, as the network does.
fn through_bytes<M: Message + Default>(wire: &M) -> M {
    M::decode(wire.encode_to_vec().as_slice()).expect("our own bytes decode")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn chunk_requests_round_trip(
        request in chunk_request(),
        renderer in prop::option::of(renderer()),
        audio_first in any::<bool>(),
    ) {
        let sent = WireChunkRequest { request, renderer, audio_first };
        let wire = through_bytes(&pb::RenderChunkRequest::from(&sent));
        prop_assert_eq!(WireChunkRequest::try_from(wire).expect("valid"), sent);
    }

    #[test]
    fn describe_requests_round_trip(request in describe_request()) {
        let wire = through_bytes(&pb::DescribeRequest::from(&request));
        prop_assert_eq!(DescribeRequest::try_from(wire).expect("valid"), request);
    }

    #[test]
    fn describe_responses_round_trip(meta in meta(), renderer in renderer(), colors in 0..=256usize) {
        let gif_palette = (colors > 0).then(|| {
            spec::GifPalette::new((0..colors).map(|i| [i as u8, 3, 255 - i as u8]).collect())
                .expect("1-256 colours")
        });
        let sent = Described { meta, renderer, gif_palette };
        let wire = through_bytes(&pb::DescribeResponse::from(&sent));
        prop_assert_eq!(Described::try_from(wire).expect("valid"), sent);
    }

    #[test]
    fn composition_meta_round_trips(meta in meta()) {
        let wire = through_bytes(&pb::CompositionMeta::from(&meta));
        prop_assert_eq!(CompositionMeta::try_from(wire).expect("valid"), meta);
    }

    #[test]
    fn chunk_events_round_trip(event in event()) {
        let wire = through_bytes(&pb::RenderChunkEvent::from(event.clone()));
        prop_assert_eq!(ChunkEvent::try_from(wire).expect("valid"), event);
    }

    #[test]
    fn video_settings_round_trip(settings in video()) {
        let wire = through_bytes(&pb::VideoSettings::from(&settings));
        prop_assert_eq!(VideoSettings::try_from(wire).expect("valid"), settings);
    }

    #[test]
    fn sources_round_trip(s in source()) {
        let wire = through_bytes(&pb::CompositionSource::from(&s));
        prop_assert_eq!(SourceSpec::try_from(wire).expect("valid"), s);
    }

    #[test]
    fn artifact_targets_round_trip(t in target()) {
        let wire = through_bytes(&pb::ArtifactTarget::from(&t));
        prop_assert_eq!(ArtifactTarget::try_from(wire).expect("valid"), t);
    }
}

#[test]
fn crf_zero_is_not_unset() {
    let settings = VideoSettings {
        quality: spec::Quality::Crf(0),
        ..VideoSettings::default()
    };
    let wire = through_bytes(&pb::VideoSettings::from(&settings));
    assert_eq!(wire.crf, Some(0));
    assert_eq!(VideoSettings::try_from(wire).expect("valid"), settings);
}

#[test]
fn float_props_survive_the_wire_bit_for_bit() {
    // Numbers whose shortest decimal form serde_json's fast parser (without
    // `float_roundtrip`) reads back one unit in the last place off: a prop
    // must reach the worker (and its cache key) exactly as sent.
    for x in [
        1.284_955_611_470_173_1e20_f64,
        2.225_073_858_507_201e-308,
        0.300_000_000_000_000_04,
        1e23,
    ] {
        let mut props = composition::Props::new();
        props.insert("x".into(), serde_json::json!(x));
        let sent = DescribeRequest {
            source: SourceSpec::Registered,
            composition_id: "c".into(),
            props,
            palette_frames: Vec::new(),
        };
        let mut request = sent.clone();
        for _ in 0..2 {
            let wire = through_bytes(&pb::DescribeRequest::from(&request));
            request = DescribeRequest::try_from(wire).expect("valid");
        }
        assert_eq!(request, sent, "{x:e}");
        assert_eq!(
            request.props["x"].as_f64().map(f64::to_bits),
            Some(x.to_bits())
        );
    }
}
