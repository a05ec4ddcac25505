//! Images as users bring them, each made here: EXIF orientation (all 8, on
//! JPEGs that Debian's ffmpeg decodes and turns as the EXIF table says; a PNG
//! `eXIf`), ICC profiles and PNG `gAMA` converted to sRGB as LittleCMS
//! (`transicc`) converts them, damaged JPEGs refused naming the file,
//! animated files refused by name, and SVG rendered at the size shown.

use std::path::Path;
use std::process::Command;

use composition::scene::SceneBundle;
use composition::{CompositionError, ErrorKind, Props};
use testkit::media::{self, PixFmt};

use crate::render;

/// A bundle with one image layer, `file` drawn at its own size (or `size`)
/// in a `w`×`h` composition.
fn scene(dir: &Path, file: &str, (w, h): (u32, u32), size: Option<[u32; 2]>) {
    let mut layer = serde_json::json!({"type": "image", "name": "Photo", "src": file});
    if let Some(s) = size {
        layer["size"] = serde_json::json!(s);
    }
    let scene = serde_json::json!({"version": 1, "compositions": [{
        "id": "c", "width": w, "height": h, "fps": 30, "duration": 1, "layers": [layer]}]});
    std::fs::write(dir.join("scene.json"), scene.to_string()).expect("scene");
}

/// Renders frame 0 of the bundle's composition `c`.
fn frame(dir: &Path) -> Result<Vec<u8>, CompositionError> {
    let bundle = SceneBundle::open(dir)?;
    Ok(render(&bundle, "c", &Props::new(), 0))
}

fn open_error(dir: &Path) -> CompositionError {
    SceneBundle::open(dir).expect_err("the bundle must be refused")
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG chunk.
fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut c = (data.len() as u32).to_be_bytes().to_vec();
    c.extend_from_slice(kind);
    c.extend_from_slice(data);
    c.extend_from_slice(&crc32(&c[4..]).to_be_bytes());
    c
}

/// An RGB PNG of `pixels` with `extra` chunks right after `IHDR`.
fn png(w: u32, h: u32, pixels: &[u8], extra: &[Vec<u8>]) -> Vec<u8> {
    let mut plain = Vec::new();
    image::codecs::png::PngEncoder::new(&mut plain)
        .write_image(pixels, w, h, image::ExtendedColorType::Rgb8)
        .expect("png");
    let ihdr_end = 8 + 25;
    let mut out = plain[..ihdr_end].to_vec();
    for c in extra {
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&plain[ihdr_end..]);
    out
}
use image::ImageEncoder as _;

/// `pixels` (RGB) as a JPEG made by ffmpeg (4:4:4 at its best quality) in
/// `dir`: its path and bytes.
fn jpeg(
    dir: &Path,
    name: &str,
    (w, h): (u32, u32),
    pixels: &[u8],
) -> (std::path::PathBuf, Vec<u8>) {
    let src = dir.join(format!("{name}.png"));
    std::fs::write(&src, png(w, h, pixels, &[])).expect("png");
    let out = dir.join(name);
    media::run(
        Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-i"])
            .arg(&src)
            .args(["-q:v", "1", "-pix_fmt", "yuvj444p"])
            .arg(&out),
    );
    let bytes = std::fs::read(&out).expect("jpeg");
    (out, bytes)
}

/// `jpeg` with an `APPn` segment (`marker` 0xe1 for EXIF, 0xe2 for ICC)
/// right after its SOI.
fn with_segment(jpeg: &[u8], marker: u8, payload: &[u8]) -> Vec<u8> {
    let mut file = jpeg[..2].to_vec();
    file.extend_from_slice(&[0xff, marker]);
    file.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    file.extend_from_slice(payload);
    file.extend_from_slice(&jpeg[2..]);
    file
}

/// A zlib stream of stored (uncompressed) blocks, as `iCCP` needs.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = data.chunks(65_535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        z.extend_from_slice(&(b.len() as u16).to_le_bytes());
        z.extend_from_slice(&(!(b.len() as u16)).to_le_bytes());
        z.extend_from_slice(b);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    z
}

fn s15(v: f64) -> [u8; 4] {
    ((v * 65_536.0).round() as i32).to_be_bytes()
}

/// A minimal ICC v2 display profile: matrix/TRC RGB with D50-adapted
/// `colorants` (columns r, g, b) and one gamma for every channel, or gray
/// with that gamma when `colorants` is `None`.
fn icc_profile(colorants: Option<[[f64; 3]; 3]>, gamma: f64) -> Vec<u8> {
    let xyz = |v: [f64; 3]| {
        let mut t = b"XYZ \0\0\0\0".to_vec();
        for c in v {
            t.extend_from_slice(&s15(c));
        }
        t
    };
    let mut desc = b"desc\0\0\0\0".to_vec();
    desc.extend_from_slice(&5u32.to_be_bytes());
    desc.extend_from_slice(b"test\0");
    desc.extend_from_slice(&[0; 8]); // no Unicode description
    desc.extend_from_slice(&[0; 3 + 67]); // no ScriptCode description
    let mut curv = b"curv\0\0\0\0".to_vec();
    curv.extend_from_slice(&1u32.to_be_bytes());
    curv.extend_from_slice(&((gamma * 256.0).round() as u16).to_be_bytes());
    let mut tags: Vec<(&[u8; 4], Vec<u8>)> = vec![
        (b"desc", desc),
        (b"cprt", b"text\0\0\0\0none\0".to_vec()),
        (b"wtpt", xyz([0.9642, 1.0, 0.8249])),
    ];
    let space: &[u8; 4] = match colorants {
        Some(m) => {
            tags.push((b"rXYZ", xyz([m[0][0], m[1][0], m[2][0]])));
            tags.push((b"gXYZ", xyz([m[0][1], m[1][1], m[2][1]])));
            tags.push((b"bXYZ", xyz([m[0][2], m[1][2], m[2][2]])));
            for t in [b"rTRC", b"gTRC", b"bTRC"] {
                tags.push((t, curv.clone()));
            }
            b"RGB "
        }
        None => {
            tags.push((b"kTRC", curv));
            b"GRAY"
        }
    };
    let mut table = (tags.len() as u32).to_be_bytes().to_vec();
    let mut data = Vec::new();
    let base = 128 + 4 + 12 * tags.len();
    for (sig, bytes) in &tags {
        while data.len() % 4 != 0 {
            data.push(0);
        }
        table.extend_from_slice(*sig);
        table.extend_from_slice(&((base + data.len()) as u32).to_be_bytes());
        table.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        data.extend_from_slice(bytes);
    }
    let size = base + data.len();
    let mut p = Vec::with_capacity(size);
    p.extend_from_slice(&(size as u32).to_be_bytes());
    p.extend_from_slice(&[0; 4]); // CMM
    p.extend_from_slice(&[2, 0x10, 0, 0]); // version 2.1
    p.extend_from_slice(b"mntr");
    p.extend_from_slice(space);
    p.extend_from_slice(b"XYZ ");
    p.extend_from_slice(&[0; 12]); // date
    p.extend_from_slice(b"acsp");
    p.extend_from_slice(&[0; 24]); // platform, flags, manufacturer, model, attributes
    p.extend_from_slice(&[0; 4]); // perceptual intent
    for c in [0.9642, 1.0, 0.8249] {
        p.extend_from_slice(&s15(c));
    }
    p.extend_from_slice(&[0; 4 + 16 + 28]); // creator, id, reserved
    assert_eq!(p.len(), 128);
    p.extend_from_slice(&table);
    p.extend_from_slice(&data);
    p
}

/// Adobe RGB (1998)'s colorants adapted to D50, columns r, g, b.
const ADOBE_RGB: [[f64; 3]; 3] = [
    [0.60974, 0.20528, 0.14919],
    [0.31111, 0.62567, 0.06322],
    [0.01947, 0.06087, 0.74457],
];

/// sRGB's colorants adapted to D50.
const SRGB: [[f64; 3]; 3] = [
    [0.43607, 0.38515, 0.14307],
    [0.22249, 0.71687, 0.06061],
    [0.01392, 0.09708, 0.71410],
];

/// What LittleCMS makes of 8-bit `colours` in `profile`, converted to sRGB
/// with the relative colorimetric intent.
fn transicc(dir: &Path, profile: &[u8], colours: &[[u8; 3]]) -> Vec<[u8; 3]> {
    let path = dir.join("judge.icc");
    std::fs::write(&path, profile).expect("profile");
    let input: String = colours
        .iter()
        .map(|c| format!("{} {} {}\n", c[0], c[1], c[2]))
        .collect();
    let mut child = Command::new("transicc")
        .arg(format!("-i{}", path.display()))
        .args(["-o*sRGB", "-t1", "-n", "-s"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("transicc runs (Debian's liblcms2-utils)");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("transicc");
    let text = String::from_utf8_lossy(&out.stdout);
    let values: Vec<f64> = text
        .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    assert_eq!(values.len(), colours.len() * 3, "transicc said: {text}");
    values
        .chunks(3)
        .map(|v| std::array::from_fn(|i| v[i].round().clamp(0.0, 255.0) as u8))
        .collect()
}

/// Renders a PNG of `colours` (one pixel each) with `chunks` and compares
/// every pixel with what `judge` (a profile for LittleCMS) says.
#[track_caller]
fn check_colours(chunks: &[Vec<u8>], judge: &[u8], what: &str) {
    let colours: Vec<[u8; 3]> = vec![
        [220, 40, 40],
        [40, 180, 60],
        [30, 60, 200],
        [128, 128, 128],
        [250, 250, 250],
        [10, 10, 10],
        [255, 0, 0],
        [0, 0, 0],
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let pixels: Vec<u8> = colours.iter().flatten().copied().collect();
    let n = colours.len() as u32;
    std::fs::write(dir.path().join("c.png"), png(n, 1, &pixels, chunks)).expect("png");
    scene(dir.path(), "c.png", (n, 1), None);
    let ours = frame(dir.path()).expect("renders");
    let theirs = transicc(dir.path(), judge, &colours);
    for (i, (c, t)) in colours.iter().zip(&theirs).enumerate() {
        let o = &ours[i * 4..i * 4 + 3];
        let close = o.iter().zip(t).all(|(a, b)| a.abs_diff(*b) <= 1);
        assert!(close, "{what}: {c:?} became {o:?}; LittleCMS says {t:?}");
    }
}

#[test]
fn icc_profiles_and_png_gamma_are_converted_to_srgb_as_littlecms_does() {
    let adobe = icc_profile(Some(ADOBE_RGB), 563.0 / 256.0);
    let mut iccp = b"Adobe RGB\0\0".to_vec();
    iccp.extend_from_slice(&zlib_stored(&adobe));
    check_colours(&[chunk(b"iCCP", &iccp)], &adobe, "Adobe RGB iCCP");

    let gray = icc_profile(None, 1.8);
    let mut iccp = b"gray\0\0".to_vec();
    iccp.extend_from_slice(&zlib_stored(&gray));
    // A gray profile on RGB data converts each channel by the gray curve;
    // the judge is the same curve on sRGB primaries.
    check_colours(
        &[chunk(b"iCCP", &iccp)],
        &icc_profile(Some(SRGB), 1.8),
        "gray gamma 1.8 iCCP",
    );

    // gAMA alone: linear data (gamma 1.0) is much brighter in sRGB.
    check_colours(
        &[chunk(b"gAMA", &100_000u32.to_be_bytes())],
        &icc_profile(Some(SRGB), 1.0),
        "gAMA 1.0",
    );
    // gAMA with cHRM of Adobe RGB's primaries.
    let chrm: Vec<u8> = [
        31_270u32, 32_900, 64_000, 33_000, 21_000, 71_000, 15_000, 6_000,
    ]
    .iter()
    .flat_map(|v| v.to_be_bytes())
    .collect();
    check_colours(
        &[
            chunk(b"gAMA", &45_455u32.to_be_bytes()),
            chunk(b"cHRM", &chrm),
        ],
        &icc_profile(Some(ADOBE_RGB), 2.2),
        "gAMA 1/2.2 with Adobe RGB cHRM",
    );
}

/// Display P3's colorants adapted to D50 (what iPhones embed).
const DISPLAY_P3: [[f64; 3]; 3] = [
    [0.51512, 0.29198, 0.15710],
    [0.24120, 0.69225, 0.06657],
    [-0.00105, 0.04189, 0.78407],
];

#[test]
fn a_jpeg_icc_profile_is_applied_to_what_the_jpeg_decodes_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Four flat 16×16 blocks, 4:4:4 at the best quality.
    let colours = [
        [220u8, 40, 40],
        [40, 180, 60],
        [30, 60, 200],
        [200, 200, 60],
    ];
    let mut px = Vec::new();
    for _ in 0..16 {
        for x in 0..64 {
            px.extend_from_slice(&colours[x / 16]);
        }
    }
    let (plain, bytes) = jpeg(dir.path(), "plain.jpg", (64, 16), &px);
    let profile = icc_profile(Some(DISPLAY_P3), 2.2);
    let file = with_segment(
        &bytes,
        0xe2,
        &[&b"ICC_PROFILE\0\x01\x01"[..], &profile].concat(),
    );
    std::fs::write(dir.path().join("p3.jpg"), &file).expect("write");
    scene(dir.path(), "p3.jpg", (64, 16), None);
    let ours = frame(dir.path()).expect("renders");
    // ffmpeg decodes the pixels (it applies no profile); LittleCMS converts
    // those values.
    let decoded = &media::decode_video_frames(&plain, PixFmt::Rgba)[0].planes[0].data;
    let centre = |img: &[u8], b: usize| {
        let i = (8 * 64 + b * 16 + 8) * 4;
        [img[i], img[i + 1], img[i + 2]]
    };
    let values: Vec<[u8; 3]> = (0..4).map(|b| centre(decoded, b)).collect();
    let theirs = transicc(dir.path(), &profile, &values);
    for b in 0..4 {
        let o = centre(&ours, b);
        let close = o.iter().zip(&theirs[b]).all(|(a, t)| a.abs_diff(*t) <= 2);
        assert!(
            close,
            "block {b}: {:?} became {o:?}; LittleCMS says {:?}",
            values[b], theirs[b]
        );
    }
}

#[test]
fn srgb_declarations_leave_pixels_unchanged() {
    let colours: Vec<u8> = (0..=255u8).flat_map(|v| [v, 255 - v, v / 2]).collect();
    for (what, chunks) in [
        ("sRGB chunk", vec![chunk(b"sRGB", &[0])]),
        ("gAMA 1/2.2", vec![chunk(b"gAMA", &45_455u32.to_be_bytes())]),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("c.png"), png(256, 1, &colours, &chunks)).expect("png");
        scene(dir.path(), "c.png", (256, 1), None);
        let ours = frame(dir.path()).expect("renders");
        let rgb: Vec<u8> = ours
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        assert_eq!(rgb, colours, "{what}");
    }
}

/// A 32×16 picture of four flat quadrants with a marker, so every
/// orientation looks different.
fn quadrants() -> Vec<u8> {
    let mut px = Vec::with_capacity(32 * 16 * 3);
    for y in 0..16 {
        for x in 0..32 {
            let c = match (x < 16, y < 8) {
                (true, true) => [230, 30, 30],
                (false, true) => [30, 200, 30],
                (true, false) => [30, 30, 220],
                (false, false) => [240, 240, 240],
            };
            let c = if (x, y) == (2, 2) { [0, 0, 0] } else { c };
            px.extend_from_slice(&c);
        }
    }
    px
}

/// An EXIF APP1 segment holding only an orientation.
fn exif_orientation(orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes());
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut exif = b"Exif\0\0".to_vec();
    exif.extend_from_slice(&tiff);
    exif
}

#[test]
fn exif_orientations_turn_jpegs_and_pngs_upright() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, bytes) = jpeg(dir.path(), "base.jpg", (32, 16), &quadrants());
    // The EXIF table (TIFF 6.0 `Orientation`) as ffmpeg filters.
    let turns = [
        (1, "null"),
        (2, "hflip"),
        (3, "hflip,vflip"),
        (4, "vflip"),
        (5, "transpose=cclock_flip"),
        (6, "transpose=clock"),
        (7, "transpose=clock_flip"),
        (8, "transpose=cclock"),
    ];
    for (orientation, filter) in turns {
        let file = with_segment(&bytes, 0xe1, &exif_orientation(orientation));
        std::fs::write(dir.path().join("photo.jpg"), &file).expect("jpeg");
        let size = if orientation >= 5 { (16, 32) } else { (32, 16) };
        scene(dir.path(), "photo.jpg", size, None);
        let ours = frame(dir.path()).expect("renders");
        let expected = dir.path().join(format!("expected{orientation}.png"));
        media::run(
            Command::new("ffmpeg")
                .args(["-v", "error", "-y", "-i"])
                .arg(&base)
                .args(["-vf", filter])
                .arg(&expected),
        );
        let theirs = &media::decode_video_frames(&expected, PixFmt::Rgba)[0].planes[0].data;
        assert_eq!(theirs.len(), ours.len(), "orientation {orientation}: size");
        let worst = ours
            .iter()
            .zip(theirs)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0);
        // Two JPEG decoders agree within a few levels on flat quadrants; a
        // wrong turn is off by ~200.
        assert!(worst <= 12, "orientation {orientation}: off by {worst}");
    }

    // A PNG's eXIf chunk: orientation 6 turns it clockwise.
    std::fs::write(
        dir.path().join("photo.png"),
        png(
            32,
            16,
            &quadrants(),
            &[chunk(b"eXIf", &exif_orientation(6)[6..])],
        ),
    )
    .expect("png");
    scene(dir.path(), "photo.png", (16, 32), None);
    let ours = frame(dir.path()).expect("renders");
    // The marker at (2, 2) of the stored image is at (13, 2) upright.
    let at = |x: usize, y: usize| &ours[(y * 16 + x) * 4..(y * 16 + x) * 4 + 3];
    assert_eq!(at(13, 2), [0, 0, 0]);
    assert_eq!(
        at(2, 2),
        [30, 30, 220],
        "top-left upright is the stored bottom-left"
    );
}

/// A WebP of `pixels` made by ffmpeg, turned into the extended format with
/// an `EXIF` chunk holding `orientation`.
fn webp_with_orientation(
    dir: &Path,
    (w, h): (u32, u32),
    pixels: &[u8],
    orientation: u16,
) -> Vec<u8> {
    let src = dir.join("webp-src.png");
    std::fs::write(&src, png(w, h, pixels, &[])).expect("png");
    let out = dir.join("plain.webp");
    media::run(
        Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-i"])
            .arg(&src)
            .args(["-c:v", "libwebp", "-lossless", "1"])
            .arg(&out),
    );
    let file = std::fs::read(&out).expect("webp");
    let riff_chunk = |kind: &[u8], data: &[u8]| {
        let mut c = kind.to_vec();
        c.extend_from_slice(&(data.len() as u32).to_le_bytes());
        c.extend_from_slice(data);
        if data.len() % 2 == 1 {
            c.push(0);
        }
        c
    };
    let mut chunks = Vec::new();
    let mut at = 12;
    while at + 8 <= file.len() {
        let len =
            u32::from_le_bytes([file[at + 4], file[at + 5], file[at + 6], file[at + 7]]) as usize;
        let kind = &file[at..at + 4];
        if kind != b"VP8X" {
            chunks.extend_from_slice(&riff_chunk(kind, &file[at + 8..at + 8 + len]));
        }
        at += 8 + len + len % 2;
    }
    let mut vp8x = vec![0x08, 0, 0, 0]; // EXIF present
    vp8x.extend_from_slice(&(w - 1).to_le_bytes()[..3]);
    vp8x.extend_from_slice(&(h - 1).to_le_bytes()[..3]);
    let mut body = b"WEBP".to_vec();
    body.extend_from_slice(&riff_chunk(b"VP8X", &vp8x));
    body.extend_from_slice(&chunks);
    body.extend_from_slice(&riff_chunk(b"EXIF", &exif_orientation(orientation)[6..]));
    riff_chunk(b"RIFF", &body)
}

#[test]
fn a_webp_exif_orientation_is_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = webp_with_orientation(dir.path(), (32, 16), &quadrants(), 8);
    std::fs::write(dir.path().join("photo.webp"), file).expect("webp");
    scene(dir.path(), "photo.webp", (16, 32), None);
    let ours = frame(dir.path()).expect("renders");
    // Orientation 8 turns it counter-clockwise: the stored top-right (green)
    // is upright top-left, the marker at (2, 2) is at (2, 29).
    let at = |x: usize, y: usize| &ours[(y * 16 + x) * 4..(y * 16 + x) * 4 + 3];
    assert_eq!(at(4, 4), [30, 200, 30]);
    assert_eq!(at(2, 29), [0, 0, 0]);
}

#[test]
fn damaged_jpegs_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let noise: Vec<u8> = (0..64 * 64 * 3).map(|i| ((i * 7919) % 251) as u8).collect();
    let (_, bytes) = jpeg(dir.path(), "good.jpg", (64, 64), &noise);
    let truncated = &bytes[..bytes.len() * 6 / 10];
    let mut marker = bytes.clone();
    let mid = bytes.len() / 2;
    marker[mid..mid + 2].copy_from_slice(&[0xff, 0xd8]); // SOI inside the scan
    for (name, file) in [("cut.jpg", truncated.to_vec()), ("marker.jpg", marker)] {
        std::fs::write(dir.path().join(name), file).expect("write");
        scene(dir.path(), name, (64, 64), None);
        let e = open_error(dir.path());
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name}: {e}");
        let text = e.to_string();
        assert!(
            text.contains(&format!(
                "layer `Photo`: image `{name}`: the JPEG data is damaged or truncated"
            )),
            "{name}: {text}"
        );
    }
    // The intact file renders.
    scene(dir.path(), "good.jpg", (64, 64), None);
    frame(dir.path()).expect("the intact JPEG renders");
}

#[test]
fn animated_images_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, args, message) in [
        (
            "a.png",
            &["-plays", "0", "-f", "apng"][..],
            "this APNG is animated: animated images are not supported",
        ),
        (
            "a.webp",
            &["-c:v", "libwebp_anim", "-loop", "0"][..],
            "this WebP is animated: animated images are not supported",
        ),
        (
            "a.gif",
            &[][..],
            "GIF is not supported (animated images are not either)",
        ),
    ] {
        media::run(
            Command::new("ffmpeg")
                .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
                .arg("testsrc=size=16x16:rate=10:duration=0.3")
                .args(args)
                .arg(dir.path().join(name)),
        );
        scene(dir.path(), name, (16, 16), None);
        let e = open_error(dir.path()).to_string();
        assert!(e.contains(&format!("image `{name}`: {message}")), "{e}");
    }
}

#[test]
fn svg_renders_at_the_size_shown_and_refuses_what_it_would_drop() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("logo.svg"),
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 50" width="100" height="50">
             <rect x="0" y="0" width="50" height="50" fill="#ff0000"/>
             <rect x="50" y="0" width="50" height="50" fill="#0000ff"/></svg>"##,
    )
    .expect("svg");
    scene(dir.path(), "logo.svg", (200, 100), Some([200, 100]));
    let rgba = frame(dir.path()).expect("renders");
    let at = |x: usize, y: usize| &rgba[(y * 200 + x) * 4..(y * 200 + x) * 4 + 4];
    // Rendered at 200x100 (not 100x50 scaled up): the edge is crisp.
    assert_eq!(at(99, 50), [255, 0, 0, 255]);
    assert_eq!(at(100, 50), [0, 0, 255, 255]);
    assert_eq!(at(0, 0), [255, 0, 0, 255]);
    assert_eq!(at(199, 99), [0, 0, 255, 255]);

    for (body, message) in [
        (
            r#"<text x="0" y="10">Hi</text>"#,
            "SVG text is not supported (fonts are the bundle's only): convert the text to paths (outlines)",
        ),
        (
            r#"<image href="../../etc/passwd" width="10" height="10"/>"#,
            "SVG with an embedded or linked image is not supported",
        ),
    ] {
        std::fs::write(
            dir.path().join("logo.svg"),
            format!(
                r#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">{body}</svg>"#
            ),
        )
        .expect("svg");
        let e = open_error(dir.path()).to_string();
        assert!(e.contains(&format!("image `logo.svg`: {message}")), "{e}");
    }
}
