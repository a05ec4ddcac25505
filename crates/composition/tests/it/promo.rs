//! The reference `promo`: goldens (downscaled 4×), its spec checked at
//! sample pixels, overrides, and byte-identical output across threads.

use std::sync::Arc;

use composition::scene::SceneBundle;
use composition::{CompositionSource, Prepared, Props};
use timebase::FrameIndex;

use crate::golden::check_golden;
use crate::{promo_dir, props, render};

/// Averages 4×4 blocks (premultiplied, rounding): exact, and small enough to
/// keep in the repository.
fn downscale4(rgba: &[u8], w: usize, h: usize) -> Vec<u8> {
    let (ow, oh) = (w / 4, h / 4);
    let mut out = vec![0u8; ow * oh * 4];
    for y in 0..oh {
        for x in 0..ow {
            for c in 0..4 {
                let mut sum = 0u32;
                for dy in 0..4 {
                    for dx in 0..4 {
                        sum += u32::from(rgba[((y * 4 + dy) * w + x * 4 + dx) * 4 + c]);
                    }
                }
                out[(y * ow + x) * 4 + c] = ((sum + 8) / 16) as u8;
            }
        }
    }
    out
}

fn px(rgba: &[u8], x: usize, y: usize) -> [u8; 4] {
    let i = (y * 1920 + x) * 4;
    [rgba[i], rgba[i + 1], rgba[i + 2], rgba[i + 3]]
}

#[test]
fn promo_matches_goldens_and_spec() {
    let bundle = SceneBundle::open(&promo_dir()).expect("promo opens");
    let meta = bundle
        .composition("promo")
        .expect("promo")
        .describe(&Props::new())
        .expect("describe");
    assert_eq!(
        (meta.width, meta.height, meta.duration_frames),
        (1920, 1080, 300)
    );
    assert_eq!(meta.fps.to_string(), "30");
    assert!(meta.has_audio);
    assert_eq!(meta.props["name"], "Ada");
    for f in [0u64, 15, 45, 150] {
        let rgba = render(&bundle, "promo", &Props::new(), f);
        // Background: #1e3a8a at the top, #9333ea at the bottom.
        let top = px(&rgba, 960, 0);
        assert!(
            top[0].abs_diff(0x1e) <= 1 && top[2].abs_diff(0x8a) <= 1,
            "frame {f}: top {top:?}"
        );
        let bottom = px(&rgba, 960, 1079);
        assert!(
            bottom[0].abs_diff(0x93) <= 1 && bottom[2].abs_diff(0xea) <= 1,
            "frame {f}: bottom {bottom:?}"
        );
        // The square's centre is always #f59e0b.
        assert_eq!(
            px(&rgba, 1600, 540),
            [0xf5, 0x9e, 0x0b, 255],
            "frame {f}: square"
        );
        check_golden(
            &format!("promo_f{f}_quarter"),
            480,
            270,
            &downscale4(&rgba, 1920, 1080),
        );
    }
    // Frame 0: square unrotated (its corner region at (1455, 395) is inside,
    // the title is invisible (opacity 0) so the title row is background.
    let f0 = render(&bundle, "promo", &Props::new(), 0);
    assert_eq!(px(&f0, 1460, 540), [0xf5, 0x9e, 0x0b, 255]);
    assert_eq!(px(&f0, 960, 600)[0], px(&f0, 100, 600)[0]);
    // Badge at scale 1 covers (101, 101); at frame 30 (scale 1.2) it reaches
    // (80, 80) and at frame 0 it does not.
    let f30 = render(&bundle, "promo", &Props::new(), 30);
    assert_ne!(px(&f30, 80, 80), px(&f0, 80, 80));
    // The subtitle appears at frame 45, not at 44.
    let f44 = render(&bundle, "promo", &Props::new(), 44);
    let f45 = render(&bundle, "promo", &Props::new(), 45);
    let row = |rgba: &[u8]| {
        (600 * 1920 * 4..601 * 1920 * 4)
            .map(|i| rgba[i])
            .collect::<Vec<_>>()
    };
    assert_ne!(row(&f44), row(&f45));
}

#[test]
fn overrides_change_what_they_name() {
    let bundle = SceneBundle::open(&promo_dir()).expect("promo opens");
    let p = props(serde_json::json!({
        "name": "Grace",
        "color.Square": "#00ff00",
        "visible.Badge": "false",
        "transform.Square.position": "800,300",
        "transform.Square.scale": 0.5,
        "opacity.Subtitle": 1,
        "text.Title": "Bonjour",
    }));
    let meta = bundle
        .composition("promo")
        .expect("promo")
        .describe(&p)
        .expect("describe");
    assert_eq!(meta.props["color.Square"], "#00ff00");
    let plain = render(&bundle, "promo", &Props::new(), 60);
    let rgba = render(&bundle, "promo", &p, 60);
    assert_eq!(px(&rgba, 800, 300), [0, 255, 0, 255]);
    // The badge is hidden: its centre shows the background.
    assert_eq!(px(&rgba, 228, 228)[0], px(&rgba, 10, 228)[0]);
    assert_ne!(px(&plain, 228, 228), px(&rgba, 228, 228));
    assert_eq!(bundle.override_paths("promo").expect("paths").len(), 36);
}

#[test]
fn frames_are_identical_across_threads_and_order() {
    let bundle = SceneBundle::open(&promo_dir()).expect("promo opens");
    let prepared: Arc<dyn Prepared> = bundle
        .composition("promo")
        .expect("promo")
        .prepare(&props(serde_json::json!({"name": "Linus"})))
        .expect("prepare");
    let frames: Vec<u64> = vec![0, 7, 29, 30, 44, 45, 59, 151, 299];
    let bytes = prepared.meta().frame_bytes();
    let mut r = prepared.frame_renderer().expect("renderer");
    let sequential: Vec<Vec<u8>> = frames
        .iter()
        .map(|&f| {
            let mut v = vec![0u8; bytes];
            r.render_frame(FrameIndex(f), &mut v).expect("render");
            v
        })
        .collect();
    let parallel: Vec<Vec<(u64, Vec<u8>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let prepared = prepared.clone();
                let mine: Vec<u64> = frames.iter().rev().copied().skip(t).step_by(2).collect();
                s.spawn(move || {
                    let mut r = prepared.frame_renderer().expect("renderer");
                    mine.into_iter()
                        .map(|f| {
                            let mut v = vec![0u8; bytes];
                            r.render_frame(FrameIndex(f), &mut v).expect("render");
                            (f, v)
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut checked = 0;
    for (f, v) in parallel.into_iter().flatten() {
        let i = frames.iter().position(|&x| x == f).expect("frame");
        assert!(sequential[i] == v, "frame {f} differs between threads");
        checked += 1;
    }
    assert!(checked >= frames.len());
    // A bundle opened again renders the same bytes.
    let again = SceneBundle::open(&promo_dir()).expect("promo opens");
    assert!(
        render(
            &again,
            "promo",
            &props(serde_json::json!({"name": "Linus"})),
            45
        ) == sequential[5]
    );
}
