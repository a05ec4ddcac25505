//! Captions layers: SRT and WebVTT parsed into cues (with WebVTT's inline
//! word timings), each cue shown for exactly the frames its times cover.

use std::sync::Arc;

use timebase::Fps;

use super::anim::Anim;
use super::template::Rgba;
use super::text::Shaped;

/// The largest captions text, in bytes.
pub const MAX_CAPTIONS_BYTES: usize = 4 << 20;

/// The most cues one captions layer may hold.
pub const MAX_CUES: usize = 20_000;

/// Where a captions layer's cues come from, and (prepared) its cues.
#[derive(Debug, Clone)]
pub struct Captions {
    /// The layer's template names a file (`src`) rather than holding the
    /// captions (`text`).
    pub from_file: bool,
    /// The colour of the current word, for cues with word timings.
    pub highlight: Option<Anim<Rgba>>,
    /// Filled when prepared, sorted by first frame.
    pub cues: Option<Arc<Vec<ShapedCue>>>,
}

impl Captions {
    /// Captions not yet read.
    pub fn new(from_file: bool, highlight: Option<Anim<Rgba>>) -> Captions {
        Captions {
            from_file,
            highlight,
            cues: None,
        }
    }
}

/// One cue as parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Cue {
    /// Start and end in milliseconds.
    pub start_ms: u64,
    pub end_ms: u64,
    /// The text shown (tags removed, entities decoded, lines joined by `\n`).
    pub text: String,
    /// Word timings: byte offset into `text` and the time it is spoken.
    pub words: Vec<(usize, u64)>,
    /// The line of the file where the cue's timing is.
    pub line: usize,
}

/// A cue laid out and placed in frames.
#[derive(Debug)]
pub struct ShapedCue {
    /// The first frame showing it.
    pub first: u64,
    /// The first frame no longer showing it.
    pub end: u64,
    pub shaped: Shaped,
    /// For each unit of `shaped` (the spans between word timings), the
    /// first frame it is the current word.
    pub unit_frames: Vec<u64>,
}

/// The first frame whose start time is at or after `ms`:
/// `ceil(ms · num / (den · 1000))`.
pub fn first_frame_at(ms: u64, fps: Fps) -> u64 {
    let n = u128::from(ms) * u128::from(fps.num());
    let d = u128::from(fps.den()) * 1000;
    u64::try_from(n.div_ceil(d)).unwrap_or(u64::MAX)
}

/// The cue showing at layer time `t`, if any (the latest started when cues
/// overlap).
pub fn cue_at(cues: &[ShapedCue], t: f64) -> Option<&ShapedCue> {
    let started = cues.partition_point(|c| c.first as f64 <= t);
    cues[..started].iter().rev().find(|c| t < c.end as f64)
}

/// The unit of `cue` being spoken at `t`.
pub fn current_unit(cue: &ShapedCue, t: f64) -> usize {
    cue.unit_frames
        .partition_point(|&f| f as f64 <= t)
        .saturating_sub(1)
}

/// Parses SRT or WebVTT (a file starting with `WEBVTT`).
///
/// # Errors
/// A message naming the line.
pub fn parse(text: &str) -> Result<Vec<Cue>, String> {
    if text.len() > MAX_CAPTIONS_BYTES {
        return Err(format!(
            "captions are longer than {MAX_CAPTIONS_BYTES} bytes"
        ));
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.lines().collect();
    let vtt = lines
        .first()
        .is_some_and(|l| l == &"WEBVTT" || l.starts_with("WEBVTT ") || l.starts_with("WEBVTT\t"));
    let mut cues = Vec::new();
    let mut i = usize::from(vtt);
    if vtt {
        // The header block runs to the first blank line.
        while i < lines.len() && !lines[i].trim().is_empty() {
            i += 1;
        }
    }
    while i < lines.len() {
        if lines[i].trim().is_empty() {
            i += 1;
            continue;
        }
        // One block: up to the next blank line.
        let start = i;
        while i < lines.len() && !lines[i].trim().is_empty() {
            i += 1;
        }
        let block = &lines[start..i];
        if vtt && (block[0].starts_with("NOTE") || block[0] == "STYLE" || block[0] == "REGION") {
            continue;
        }
        // The timing line is the first or (after an identifier) the second.
        let (t, timing) = match block.iter().position(|l| l.contains("-->")) {
            Some(p) if p <= 1 => (p, block[p]),
            _ => {
                return Err(format!(
                    "line {}: expected a cue timing `00:00:01{}000 --> 00:00:02{}000`, found `{}`",
                    start + 1,
                    if vtt { '.' } else { ',' },
                    if vtt { '.' } else { ',' },
                    super::template::quote(block[0])
                ));
            }
        };
        let line = start + t + 1;
        let (start_ms, end_ms) =
            timing_line(timing, vtt).map_err(|m| format!("line {line}: {m}"))?;
        if end_ms <= start_ms {
            return Err(format!(
                "line {line}: the cue ends ({}) before it starts ({})",
                show_ms(end_ms),
                show_ms(start_ms)
            ));
        }
        let payload = block[t + 1..].join("\n");
        let (text, words) = payload_text(&payload, vtt, start_ms, end_ms)
            .map_err(|m| format!("line {}: {m}", line + 1))?;
        cues.push(Cue {
            start_ms,
            end_ms,
            text,
            words,
            line,
        });
        if cues.len() > MAX_CUES {
            return Err(format!("more than {MAX_CUES} cues"));
        }
    }
    cues.sort_by_key(|c| (c.start_ms, c.line));
    Ok(cues)
}

fn show_ms(ms: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// `start --> end [settings]`.
fn timing_line(line: &str, vtt: bool) -> Result<(u64, u64), String> {
    let (a, rest) = line
        .split_once("-->")
        .ok_or_else(|| format!("no `-->` in `{}`", super::template::quote(line)))?;
    let b = rest.split_whitespace().next().unwrap_or("");
    Ok((timestamp(a.trim(), vtt)?, timestamp(b, vtt)?))
}

/// `hh:mm:ss.mmm` (hours optional in WebVTT; `,` in SRT).
fn timestamp(s: &str, vtt: bool) -> Result<u64, String> {
    let bad = || {
        format!(
            "`{}` is not a timestamp like `{}`",
            super::template::quote(s),
            if vtt { "00:01:02.500" } else { "00:01:02,500" }
        )
    };
    let sep = if vtt { '.' } else { ',' };
    let (hms, frac) = s
        .split_once(sep)
        .or_else(|| if vtt { None } else { s.split_once('.') })
        .ok_or_else(bad)?;
    if frac.len() != 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let parts: Vec<&str> = hms.split(':').collect();
    let num = |p: &str| -> Result<u64, String> {
        if p.is_empty() || p.len() > 9 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        p.parse().map_err(|_| bad())
    };
    let (h, m, sec) = match parts.as_slice() {
        [h, m, s] => (num(h)?, num(m)?, num(s)?),
        [m, s] if vtt => (0, num(m)?, num(s)?),
        _ => return Err(bad()),
    };
    if m > 59 || sec > 59 {
        return Err(bad());
    }
    let ms: u64 = frac.parse().map_err(|_| bad())?;
    Ok(((h * 60 + m) * 60 + sec) * 1000 + ms)
}

/// The text of a cue payload: tags removed (WebVTT `<00:00:01.500>`
/// timestamps become word timings), entities decoded.
fn payload_text(
    payload: &str,
    vtt: bool,
    start_ms: u64,
    end_ms: u64,
) -> Result<(String, Vec<(usize, u64)>), String> {
    let mut out = String::with_capacity(payload.len());
    let mut words = Vec::new();
    let mut rest = payload;
    while let Some(c) = rest.chars().next() {
        if c == '<' {
            let Some(close) = rest.find('>') else {
                return Err(format!(
                    "an unclosed tag `{}`",
                    super::template::quote(rest)
                ));
            };
            let tag = &rest[1..close];
            if vtt && tag.starts_with(|c: char| c.is_ascii_digit()) {
                let at = timestamp(tag, true)?;
                if at < start_ms || at > end_ms {
                    return Err(format!(
                        "the word timing <{tag}> is outside its cue ({} --> {})",
                        show_ms(start_ms),
                        show_ms(end_ms)
                    ));
                }
                if words.last().is_some_and(|&(_, prev)| at < prev) {
                    return Err(format!(
                        "the word timing <{tag}> is before the one before it"
                    ));
                }
                words.push((out.len(), at));
            }
            rest = &rest[close + 1..];
        } else if c == '&' && vtt {
            let entities = [
                ("&amp;", '&'),
                ("&lt;", '<'),
                ("&gt;", '>'),
                ("&nbsp;", '\u{a0}'),
                ("&lrm;", '\u{200e}'),
                ("&rlm;", '\u{200f}'),
            ];
            match entities.iter().find(|(e, _)| rest.starts_with(e)) {
                Some((e, ch)) => {
                    out.push(*ch);
                    rest = &rest[e.len()..];
                }
                None => {
                    out.push('&');
                    rest = &rest[1..];
                }
            }
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    Ok((out, words))
}

/// The byte offsets where each timed span of a cue starts (for units), and
/// the first frame of each.
pub fn word_units(cue: &Cue, fps: Fps) -> (Vec<usize>, Vec<u64>) {
    let mut starts = vec![0];
    let mut frames = vec![first_frame_at(cue.start_ms, fps)];
    for &(at, ms) in &cue.words {
        if at == 0 {
            frames[0] = first_frame_at(ms, fps);
            continue;
        }
        starts.push(at);
        frames.push(first_frame_at(ms, fps));
    }
    (starts, frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srt_and_vtt_parse_with_word_timings() {
        let srt = "1\n00:00:01,000 --> 00:00:02,500\nHello <i>there</i>\nfriend\n\n2\n00:00:03,000 --> 00:00:04,000\nBye\n";
        let cues = parse(srt).expect("srt");
        assert_eq!(cues.len(), 2);
        assert_eq!((cues[0].start_ms, cues[0].end_ms), (1000, 2500));
        assert_eq!(cues[0].text, "Hello there\nfriend");
        let vtt = "WEBVTT\n\nNOTE a comment\n\nintro\n00:01.000 --> 00:02.000 align:center\n<v Ada>Hi <00:01.500>you &amp; me\n";
        let cues = parse(vtt).expect("vtt");
        assert_eq!(cues.len(), 1);
        assert_eq!(cues[0].text, "Hi you & me");
        assert_eq!(cues[0].words, vec![(3, 1500)]);
    }

    #[test]
    fn bad_captions_name_the_line() {
        assert_eq!(
            parse("1\n00:00:01,000 --> 00:00:0x,500\nHi\n").expect_err("refused"),
            "line 2: `00:00:0x,500` is not a timestamp like `00:01:02,500`"
        );
        assert_eq!(
            parse("WEBVTT\n\n00:02.000 --> 00:01.000\nHi\n").expect_err("refused"),
            "line 3: the cue ends (00:00:01.000) before it starts (00:00:02.000)"
        );
        assert_eq!(
            parse("1\nHello\n").expect_err("refused"),
            "line 1: expected a cue timing `00:00:01,000 --> 00:00:02,000`, found `1`"
        );
    }

    #[test]
    fn a_cue_shows_from_the_first_frame_at_or_after_its_start() {
        let fps = Fps::new(30, 1).expect("fps");
        assert_eq!(first_frame_at(1000, fps), 30);
        assert_eq!(first_frame_at(1001, fps), 31);
        assert_eq!(first_frame_at(0, fps), 0);
        let ntsc = Fps::new(30000, 1001).expect("fps");
        // Frame 30 starts at 1.001 s.
        assert_eq!(first_frame_at(1001, ntsc), 30);
        assert_eq!(first_frame_at(1002, ntsc), 31);
    }
}
