//! Where the audio of an MP4/M4A really starts and ends: the edit list
//! (ISO/IEC 14496-12 §8.6.6 `elst`) or, without one, iTunes' `iTunSMPB`
//! tag. AAC encoders put 1024 or more samples of priming before the first
//! real sample and pad the last frame; players (and ffmpeg) skip them, and so
//! must we, or every M4A starts 21 ms late and a looped clip has a gap.
//! Symphonia reads neither, so the boxes are read here.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The largest `moov` box read (a two-hour M4A's is a few megabytes).
const MAX_MOOV_BYTES: u64 = 64 << 20;

/// How a track's decoded samples map to its timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gapless {
    /// The decoded sample that is timeline sample 0 (negative: the
    /// timeline starts with that much silence).
    pub offset: i64,
    /// Samples on the timeline, if the file says.
    pub frames: Option<u64>,
}

/// One `trak`'s timing boxes.
#[derive(Debug, Default)]
struct Trak {
    media_timescale: u32,
    /// `(segment_duration, media_time)` per edit.
    edits: Option<Vec<(u64, i64)>>,
}

/// The gapless timing of track `track` (in `moov` order, as Symphonia
/// numbers tracks) at `rate` Hz; `Ok(None)` if the file is not MP4 or says
/// nothing.
///
/// # Errors
/// A message for an unreadable or unsupported `moov`.
pub fn gapless(path: &Path, track: usize, rate: u32) -> Result<Option<Gapless>, String> {
    let Some(moov) = read_moov(path)? else {
        return Ok(None);
    };
    let mut movie_timescale = 0u32;
    let mut traks = Vec::new();
    let mut smpb = None;
    for (kind, body) in boxes(&moov) {
        match &kind {
            b"mvhd" => movie_timescale = timescale(body).unwrap_or(0),
            b"trak" => traks.push(trak(body)),
            b"udta" => smpb = smpb.or_else(|| itunsmpb(body)),
            _ => {}
        }
    }
    let Some(t) = traks.get(track) else {
        return Ok(None);
    };
    match &t.edits {
        Some(edits) => edit_list(edits, movie_timescale, t.media_timescale, rate),
        None => Ok(smpb.map(|(delay, samples)| Gapless {
            offset: delay as i64,
            frames: Some(samples),
        })),
    }
}

/// The body of the file's top-level `moov` box (`None`: not MP4, or no
/// `moov`), at most [`MAX_MOOV_BYTES`].
fn read_moov(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut at = 0u64;
    while at + 8 <= len {
        f.seek(SeekFrom::Start(at)).map_err(|e| e.to_string())?;
        let mut head = [0u8; 16];
        f.read_exact(&mut head[..8]).map_err(|e| e.to_string())?;
        let (mut size, kind) = (
            u64::from(be32(&head[..4])),
            [head[4], head[5], head[6], head[7]],
        );
        let mut header = 8;
        if size == 1 {
            f.read_exact(&mut head[8..16]).map_err(|e| e.to_string())?;
            size = be64(&head[8..16]);
            header = 16;
        } else if size == 0 {
            size = len - at;
        }
        if at == 0 && &kind != b"ftyp" {
            return Ok(None);
        }
        if size < header {
            return Err(format!(
                "box `{}` has size {size}",
                String::from_utf8_lossy(&kind)
            ));
        }
        if &kind == b"moov" {
            let body = size - header;
            if body > MAX_MOOV_BYTES {
                return Err(format!(
                    "its `moov` box is {body} bytes: at most {MAX_MOOV_BYTES}"
                ));
            }
            let mut buf = vec![0u8; body as usize];
            f.read_exact(&mut buf).map_err(|e| e.to_string())?;
            return Ok(Some(buf));
        }
        at += size;
    }
    Ok(None)
}

/// The gapless timing an edit list (`(duration, media time)` pairs, an
/// empty edit's time -1) gives at `rate` Hz: leading empty edits delay the
/// track, the one media edit skips the encoder's delay and ends at the
/// real last sample.
fn edit_list(
    edits: &[(u64, i64)],
    movie_timescale: u32,
    media_timescale: u32,
    rate: u32,
) -> Result<Option<Gapless>, String> {
    let scale = |v: u128, from: u32| -> Option<i128> {
        // av_rescale's rounding: to nearest.
        (from != 0)
            .then(|| ((v * u128::from(rate) + u128::from(from) / 2) / u128::from(from)) as i128)
    };
    let mut delay = 0u64;
    let mut media: Option<(u64, i64)> = None;
    for &(duration, time) in edits {
        match (time, media) {
            (-1, None) => delay += duration,
            (-1, Some(_)) => {}
            (_, None) => media = Some((duration, time)),
            (_, Some(_)) => {
                return Err("its edit list has several edits: only one is supported".into());
            }
        }
    }
    let Some((duration, time)) = media else {
        return Ok(None);
    };
    let delay = scale(u128::from(delay), movie_timescale).ok_or("no movie timescale")?;
    let skip = scale(time.max(0) as u128, media_timescale).ok_or("no media timescale")?;
    let frames = match duration {
        0 => None,
        d => Some(
            (delay + scale(u128::from(d), movie_timescale).ok_or("no movie timescale")?) as u64,
        ),
    };
    Ok(Some(Gapless {
        offset: (skip - delay) as i64,
        frames,
    }))
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// The child boxes in `data`: (type, body). Stops at the first malformed
/// one.
fn boxes(data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let head = data.get(at..at + 8)?;
        let kind = [head[4], head[5], head[6], head[7]];
        let (size, header) = match be32(head) {
            1 => (usize::try_from(be64(data.get(at + 8..at + 16)?)).ok()?, 16),
            0 => (data.len() - at, 8),
            s => (s as usize, 8),
        };
        let body = data.get(at + header..at.checked_add(size)?)?;
        at += size;
        Some((kind, body))
    })
}

/// The first child of `data` of type `kind`.
fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(data).find(|(k, _)| k == kind).map(|(_, b)| b)
}

/// The timescale of an `mvhd` or `mdhd` body (version 0 or 1).
fn timescale(body: &[u8]) -> Option<u32> {
    let at = if *body.first()? == 1 { 4 + 16 } else { 4 + 8 };
    body.get(at..at + 4).map(be32)
}

fn trak(body: &[u8]) -> Trak {
    let media_timescale = child(body, b"mdia")
        .and_then(|m| child(m, b"mdhd"))
        .and_then(timescale)
        .unwrap_or(0);
    let edits = child(body, b"edts")
        .and_then(|e| child(e, b"elst"))
        .and_then(elst);
    Trak {
        media_timescale,
        edits,
    }
}

fn elst(body: &[u8]) -> Option<Vec<(u64, i64)>> {
    let version = *body.first()?;
    let count = be32(body.get(4..8)?) as usize;
    let entry = if version == 1 { 20 } else { 12 };
    let mut out = Vec::with_capacity(count.min(64));
    for i in 0..count {
        let e = body.get(8 + i * entry..8 + (i + 1) * entry)?;
        out.push(if version == 1 {
            (be64(&e[..8]), be64(&e[8..16]) as i64)
        } else {
            (u64::from(be32(&e[..4])), i64::from(be32(&e[4..8]) as i32))
        });
    }
    Some(out)
}

/// `iTunSMPB` in `udta/meta/ilst/----`: (encoder delay, sample count).
fn itunsmpb(udta: &[u8]) -> Option<(u64, u64)> {
    let meta = child(udta, b"meta")?;
    // `meta` is a full box: version and flags before its children.
    let ilst = child(meta.get(4..)?, b"ilst")?;
    for (kind, item) in boxes(ilst) {
        if &kind != b"----" {
            continue;
        }
        let name = child(item, b"name").and_then(|n| n.get(4..));
        if name != Some(b"iTunSMPB".as_slice()) {
            continue;
        }
        // `data`: type (4), locale (4), then the text.
        let text = child(item, b"data").and_then(|d| d.get(8..))?;
        let text = std::str::from_utf8(text).ok()?;
        let fields: Vec<u64> = text
            .split_whitespace()
            .map(|f| u64::from_str_radix(f, 16))
            .collect::<Result<_, _>>()
            .ok()?;
        return Some((*fields.get(1)?, *fields.get(3)?));
    }
    None
}
