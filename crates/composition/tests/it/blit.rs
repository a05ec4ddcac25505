//! The integer picture sampler (`scene::blit`) against tiny-skia's float
//! pipeline it replaces, its exact bytes, and draws it must refuse or
//! survive.

use composition::scene::blit::{Blit, Kernel};
use sha2::{Digest, Sha256};
use testkit::noise;
use tiny_skia::{
    FilterQuality, IntSize, Paint, Pattern, Pixmap, PixmapRef, Rect, SpreadMode, Transform,
};

/// A `w`×`h` premultiplied picture: smooth colour ramps with noise, and
/// when `alpha` an alpha that varies from transparent to opaque.
fn picture(w: u32, h: u32, alpha: bool, seed: u32) -> Vec<u8> {
    let n = noise((w * h * 4) as usize, seed);
    let mut out = Vec::with_capacity(n.len());
    for y in 0..h {
        for x in 0..w {
            let i = ((y * w + x) * 4) as usize;
            let ramp =
                |k: u32, j: usize| ((k * 255 / w.max(h)) as u8 / 2).wrapping_add(n[i + j] / 2);
            let a = if alpha {
                (((x + 2 * y) * 255 / (w + 2 * h)) as u8).saturating_add(n[i + 3] / 8)
            } else {
                255
            };
            let pm = |c: u8| (u16::from(c) * u16::from(a) / 255) as u8;
            out.extend_from_slice(&[pm(ramp(x, 0)), pm(ramp(y, 1)), pm(n[i + 2]), a]);
        }
    }
    out
}

/// A premultiplied noisy background.
fn background(w: u32, h: u32) -> Vec<u8> {
    let mut bg = noise((w * h * 4) as usize, 99);
    for p in bg.chunks_exact_mut(4) {
        let a = p[3];
        for c in &mut p[..3] {
            *c = (*c).min(a);
        }
    }
    bg
}

/// A draw: the picture, the part of it drawn, picture to pixels, opacity.
struct Case {
    name: &'static str,
    pic: (u32, u32),
    alpha: bool,
    src: [f64; 4],
    tf: Transform,
    opacity: f32,
}

const TARGET: (u32, u32) = (72, 60);

fn arr(tf: Transform) -> [f64; 6] {
    [tf.sx, tf.ky, tf.kx, tf.sy, tf.tx, tf.ty].map(f64::from)
}

fn cases() -> Vec<Case> {
    let full = |w: u32, h: u32| [0.0, 0.0, f64::from(w), f64::from(h)];
    let rot = |deg: f32, s: f32, tx: f32, ty: f32| {
        Transform::from_translate(tx, ty)
            .pre_rotate(deg)
            .pre_scale(s, s)
    };
    let mut v = Vec::new();
    for (alpha, opacity) in [(false, 1.0), (true, 1.0), (true, 0.5), (false, 0.3)] {
        v.extend([
            Case {
                name: "fractional move",
                pic: (31, 23),
                alpha,
                src: full(31, 23),
                tf: Transform::from_translate(7.25, 9.6),
                opacity,
            },
            Case {
                name: "upscale 1.2",
                pic: (31, 23),
                alpha,
                src: full(31, 23),
                tf: Transform::from_row(1.2, 0.0, 0.0, 1.2, 5.3, 4.7),
                opacity,
            },
            Case {
                name: "upscale 3.7 cropped (cover)",
                pic: (31, 23),
                alpha,
                src: [4.5, 2.0, 20.0, 17.25],
                tf: Transform::from_row(3.7, 0.0, 0.0, 3.7, -10.0, -3.0),
                opacity,
            },
            Case {
                name: "downscale 0.45, non-uniform",
                pic: (97, 83),
                alpha,
                src: full(97, 83),
                tf: Transform::from_row(0.45, 0.0, 0.0, 0.6, 3.1, 2.2),
                opacity,
            },
            Case {
                name: "rotated 30",
                pic: (31, 23),
                alpha,
                src: full(31, 23),
                tf: rot(30.0, 1.4, 36.0, 10.0),
                opacity,
            },
            Case {
                name: "rotated 200 and mirrored",
                pic: (31, 23),
                alpha,
                src: full(31, 23),
                tf: rot(200.0, 1.1, 50.0, 45.0).pre_scale(-1.0, 1.0),
                opacity,
            },
            Case {
                name: "skewed",
                pic: (31, 23),
                alpha,
                src: full(31, 23),
                tf: Transform::from_row(1.3, 0.2, 0.4, 0.9, 6.0, 8.0),
                opacity,
            },
            Case {
                name: "clipped at every border",
                pic: (31, 23),
                alpha,
                src: full(31, 23),
                tf: Transform::from_row(3.0, 0.0, 0.0, 3.2, -9.5, -7.3),
                opacity,
            },
        ]);
    }
    v
}

/// The case drawn by tiny-skia as `paint_picture` drew every picture
/// before the sampler: a pattern (pad, bilinear) filling the rect.
fn reference(c: &Case, pic: &[u8]) -> Vec<u8> {
    let mut target = Pixmap::from_vec(
        background(TARGET.0, TARGET.1),
        IntSize::from_wh(TARGET.0, TARGET.1).expect("size"),
    )
    .expect("target");
    let picture = PixmapRef::from_bytes(pic, c.pic.0, c.pic.1).expect("picture");
    let [l, t, r, b] = c.src.map(|v| v as f32);
    let rect = Rect::from_ltrb(l, t, r, b).expect("rect");
    let paint = Paint {
        shader: Pattern::new(
            picture,
            SpreadMode::Pad,
            FilterQuality::Bilinear,
            c.opacity,
            Transform::identity(),
        ),
        anti_alias: true,
        ..Paint::default()
    };
    target.fill_rect(rect, &paint, c.tf, None);
    target.data().to_vec()
}

/// The case drawn by the sampler.
fn ours(c: &Case, pic: &[u8]) -> Vec<u8> {
    let mut target = background(TARGET.0, TARGET.1);
    let blit = Blit::new(c.pic, c.src, arr(c.tf), c.opacity, TARGET).expect("the sampler draws it");
    assert!(
        blit.draw(pic, &mut target, TARGET.0 as usize * 4),
        "{}",
        c.name
    );
    target
}

/// The distance in pixels from pixel `(x, y)`'s centre to the nearest
/// edge of the case's rect, negative outside.
fn inset(c: &Case, x: u32, y: u32) -> f64 {
    let [sx, ky, kx, sy, tx, ty] = arr(c.tf);
    let det = sx * sy - kx * ky;
    let (px, py) = (f64::from(x) + 0.5 - tx, f64::from(y) + 0.5 - ty);
    let (u, v) = ((sy * px - kx * py) / det, (-ky * px + sx * py) / det);
    // Picture units per pixel across each axis.
    let ku = (sy * sy + kx * kx).sqrt() / det.abs();
    let kv = (ky * ky + sx * sx).sqrt() / det.abs();
    let [l, t, r, b] = c.src;
    ((u - l) / ku)
        .min((r - u) / ku)
        .min((v - t) / kv)
        .min((b - v) / kv)
}

/// Interior pixels (centre at least a pixel inside every edge) within ±2
/// per channel of tiny-skia, with a mean difference under 0.35: both
/// sample the same four taps at the same position, tiny-skia with `f32`
/// weights and rounding once, the sampler with 8-bit weights rounding after
/// each of its three lerps, the opacity and the source-over (each rounding
/// is at most ½). Edge pixels (centre within a pixel of an edge): within
/// 72 and a mean alpha difference under 12: tiny-skia's coverage is
/// supersampled on a quarter-pixel grid (an edge at x = 3.1 covers pixel 3
/// fully, one at y = 9.6 covers row 9 by half) where the sampler's is the
/// exact overlap in 1/256ths, so an edge pixel may differ by a quarter of
/// full scale plus rounding; both fade the edge over one pixel. Edges are
/// compared at full opacity only: below it tiny-skia's edge pixels come out
/// more opaque than its interior (at opacity 0.3 an edge pixel ¾ covered
/// got alpha 149 where the interior has 77), a faint halo the sampler does
/// not draw. Pixels more than 1.5 pixels outside the rect are untouched.
#[test]
fn the_sampler_matches_tiny_skia_for_a_matrix_of_draws() {
    for (i, c) in cases().iter().enumerate() {
        let pic = picture(c.pic.0, c.pic.1, c.alpha, i as u32 + 1);
        let (want, got) = (reference(c, &pic), ours(c, &pic));
        let bg = background(TARGET.0, TARGET.1);
        let (mut sum, mut n, mut worst_in, mut worst_edge) = (0u64, 0u64, 0u8, 0u8);
        let (mut edge_sum, mut edges) = (0u64, 0u64);
        for y in 0..TARGET.1 {
            for x in 0..TARGET.0 {
                let at = ((y * TARGET.0 + x) * 4) as usize;
                let d = (0..4)
                    .map(|k| want[at + k].abs_diff(got[at + k]))
                    .max()
                    .unwrap_or(0);
                let inset = inset(c, x, y);
                if inset >= 1.0 {
                    worst_in = worst_in.max(d);
                    sum += (0..4)
                        .map(|k| u64::from(want[at + k].abs_diff(got[at + k])))
                        .sum::<u64>();
                    n += 4;
                } else if inset > -1.5 {
                    if c.opacity < 1.0 {
                        continue;
                    }
                    worst_edge = worst_edge.max(d);
                    edge_sum += u64::from(want[at + 3].abs_diff(got[at + 3]));
                    edges += 1;
                } else {
                    assert_eq!(
                        got[at..at + 4],
                        bg[at..at + 4],
                        "{}: ({x}, {y}) touched",
                        c.name
                    );
                }
            }
        }
        let mean = sum as f64 / n.max(1) as f64;
        let edge_mean = edge_sum as f64 / edges.max(1) as f64;
        let what = format!(
            "case {i} `{}` alpha {} opacity {}: worst interior {worst_in}, mean {mean:.3}, worst edge {worst_edge}, mean edge alpha {edge_mean:.2}",
            c.name, c.alpha, c.opacity
        );
        eprintln!("{what}");
        assert!(n > 0, "{what}: no interior pixel");
        assert!(worst_in <= 2 && mean < 0.35, "{what}");
        assert!(worst_edge <= 72 && edge_mean < 12.0, "{what}");
    }
}

/// The SSE2 rows, the portable rows and the per-pixel sampler give the
/// same bytes for every case (rows of every length, so the SSE2 kernel's
/// portable tail is exercised too).
#[test]
fn every_kernel_gives_the_same_bytes() {
    let stride = TARGET.0 as usize * 4;
    for (i, c) in cases().iter().enumerate() {
        let pic = picture(c.pic.0, c.pic.1, c.alpha, i as u32 + 1);
        let blit = Blit::new(c.pic, c.src, arr(c.tf), c.opacity, TARGET).expect("drawn");
        let draw = |kernel: Kernel| {
            let mut target = background(TARGET.0, TARGET.1);
            assert!(blit.draw_using(&pic, &mut target, stride, kernel));
            target
        };
        let fastest = draw(Kernel::Fastest);
        assert!(
            fastest == draw(Kernel::Portable),
            "case {i} `{}`: portable",
            c.name
        );
        assert!(
            fastest == draw(Kernel::PerPixel),
            "case {i} `{}`: per pixel",
            c.name
        );
    }
}

/// The exact bytes of a few draws: any change to the sampler's arithmetic
/// changes the promo's bytes, so it must be on purpose.
#[test]
fn the_sampler_gives_golden_bytes() {
    let all = cases();
    let mut hashes = Vec::new();
    for i in [1, 4, 12, 29] {
        let c = &all[i];
        let pic = picture(c.pic.0, c.pic.1, c.alpha, i as u32 + 1);
        let digest = Sha256::digest(ours(c, &pic));
        hashes.push(format!("{i} {}: {digest:x}", c.name));
    }
    let want = [
        "1 upscale 1.2: 13cd7d0038627a175941ae47d339b372a8fab2f13bddbe6622ed88852f2cfa4b",
        "4 rotated 30: bad67e7a52470048a1ac782ee3e3c213a9afcc60f7c3a4a016b476f633f4aadf",
        "12 rotated 30: 6ecb0a67e8c42dd5d23b8cfa0f609eb7383f922d4738a0f56b6daa911cb54f57",
        "29 rotated 200 and mirrored: 9ece86ac732b3a9bac64e2b4bc0264ef77227e6c732551ba2f962a08efa33931",
    ];
    assert_eq!(hashes, want);
}

/// Whole pixel moves at scale 1 copy the picture exactly (what the
/// pattern's nearest sampling gave).
#[test]
fn whole_pixel_moves_copy_the_picture() {
    let (w, h) = (13u32, 9u32);
    let pic = picture(w, h, true, 7);
    let mut target = vec![0u8; (TARGET.0 * TARGET.1 * 4) as usize];
    let blit = Blit::new(
        (w, h),
        [0.0, 0.0, f64::from(w), f64::from(h)],
        [1.0, 0.0, 0.0, 1.0, 5.0, 3.0],
        1.0,
        TARGET,
    )
    .expect("drawn");
    assert_eq!(blit.bound(), Some((4, 2, 19, 13)));
    assert!(blit.draw(&pic, &mut target, TARGET.0 as usize * 4));
    for y in 0..TARGET.1 {
        for x in 0..TARGET.0 {
            let at = ((y * TARGET.0 + x) * 4) as usize;
            let inside = (5..5 + w).contains(&x) && (3..3 + h).contains(&y);
            let want = if inside {
                let s = (((y - 3) * w + x - 5) * 4) as usize;
                pic[s..s + 4].to_vec()
            } else {
                vec![0; 4]
            };
            assert_eq!(target[at..at + 4], want[..], "({x}, {y})");
        }
    }
}

/// Transforms the fixed point cannot hold are refused (the caller falls
/// back to tiny-skia); far away or tiny draws draw nothing; none panics.
#[test]
fn degenerate_and_extreme_draws_are_refused_or_harmless() {
    let pic = picture(8, 8, true, 3);
    let src = [0.0, 0.0, 8.0, 8.0];
    let refused = [
        [0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
        [1.0, 2.0, 0.5, 1.0, 0.0, 0.0],
        [f64::NAN, 0.0, 0.0, 1.0, 0.0, 0.0],
        [1e9, 0.0, 0.0, 1e9, 0.0, 0.0],
        [1e-9, 0.0, 0.0, 1e-9, 0.0, 0.0],
        [1.0, 0.0, 0.0, 1.0, 1e12, 0.0],
        [1.0, 0.0, 0.0, 1.0, f64::INFINITY, 0.0],
    ];
    for tf in refused {
        assert_eq!(Blit::new((8, 8), src, tf, 1.0, TARGET), None, "{tf:?}");
    }
    for bad_src in [
        [0.0, 0.0, 9.0, 8.0],
        [4.0, 0.0, 4.0, 8.0],
        [f64::NAN, 0.0, 1.0, 1.0],
    ] {
        let tf = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        assert_eq!(
            Blit::new((8, 8), bad_src, tf, 1.0, TARGET),
            None,
            "{bad_src:?}"
        );
    }
    assert_eq!(
        Blit::new(
            (8, 8),
            src,
            [1.0, 0.0, 0.0, 1.0, 0.0, 0.0],
            f32::NAN,
            TARGET
        ),
        None
    );
    // Drawn, but nothing to draw: off the target, invisible.
    let harmless = [
        ([1.0, 0.0, 0.0, 1.0, -500.0, 10.0], 1.0),
        ([1.0, 0.0, 0.0, 1.0, 10.0, 5000.0], 1.0),
        ([1.0, 0.0, 0.0, 1.0, 10.0, 10.0], 0.0),
    ];
    for (tf, opacity) in harmless {
        let blit = Blit::new((8, 8), src, tf, opacity, TARGET).expect("in range");
        assert_eq!(blit.bound(), None, "{tf:?}");
    }
    // Huge but representable scales, a 1×1 picture, a draw past every
    // border and short buffers: drawn (or refused) without panicking.
    let one = [200u8, 100, 50, 255];
    let mut target = vec![0u8; (TARGET.0 * TARGET.1 * 4) as usize];
    let stride = TARGET.0 as usize * 4;
    for (pic, size, tf) in [
        (&pic[..], (8, 8), [1e5, 0.0, 0.0, 1e5, -4e5, -4e5]),
        (&one[..], (1, 1), [100.0, 30.0, -30.0, 100.0, -20.0, -20.0]),
        (&one[..], (1, 1), [0.01, 0.0, 0.0, 0.01, 3.0, 3.0]),
    ] {
        let s = [0.0, 0.0, f64::from(size.0), f64::from(size.1)];
        let blit = Blit::new(size, s, tf, 0.7, TARGET).expect("in range");
        assert!(blit.draw(pic, &mut target, stride), "{tf:?}");
    }
    let blit =
        Blit::new((8, 8), src, [1.0, 0.0, 0.0, 1.0, 2.0, 2.0], 1.0, TARGET).expect("in range");
    assert!(
        !blit.draw(&pic[..100], &mut target, stride),
        "a short picture"
    );
    assert!(
        !blit.draw(&pic, &mut target[..200], stride),
        "a short target"
    );
}
