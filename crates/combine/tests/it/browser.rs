//! The output plays in a browser: headless Chromium (Debian's `chromium`,
//! which CI must install) loads it in a `<video>` element from a page this
//! test serves on 127.0.0.1, checks `duration`, seeks near the end, draws the
//! frame to a canvas and reports back over HTTP. MP4 (H.264), WebM (VP9 and
//! AV1) and GIF (decoded by the browser's `ImageDecoder`: frame count,
//! loop count and every frame's delay).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use chunker::timebase::Fps;
use combine::{CombineOptions, PcmFormat, combine_chunks};

use crate::support::*;

/// How long Chromium gets to load, seek, draw and report.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

const PAGE: &str = r#"<!doctype html><html><body>
<video id="v" muted preload="auto" src="/out"></video><canvas id="c"></canvas>
<script>
const v = document.getElementById('v');
const report = (s) => fetch('/result?' + encodeURIComponent(s));
v.addEventListener('error', () => report('error code=' + (v.error && v.error.code) + ' ' + (v.error && v.error.message)));
v.addEventListener('loadedmetadata', () => { v.currentTime = v.duration - 0.05; });
// After the seek the frame may still be on its way to the compositor
// (a loaded machine): draw again every 250 ms until it shows, for up to 10 s.
let tries = 0;
const draw = () => {
  const c = document.getElementById('c');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d');
  g.drawImage(v, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let lit = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 30) lit++;
  if (lit * 4 <= c.width * c.height && ++tries < 40) { setTimeout(draw, 250); return; }
  report('ok duration=' + v.duration + ' time=' + v.currentTime + ' size=' + v.videoWidth + 'x' + v.videoHeight +
         ' lit=' + lit + ' error=' + (v.error ? v.error.code : 'none') +
         ' h264=' + v.canPlayType('video/mp4; codecs="avc1.640015, mp4a.40.2"') +
         ' readyState=' + v.readyState + ' tries=' + tries);
};
v.addEventListener('seeked', draw);
setTimeout(() => report('timeout readyState=' + v.readyState + ' networkState=' + v.networkState), 60000);
</script></body></html>"#;

/// The GIF page: Chromium's own GIF decoder (WebCodecs' `ImageDecoder`, the
/// one `<img>` uses) reports the frames, the loop count (Infinity for a
/// GIF that loops forever) and the sum of the frames' delays.
const GIF_PAGE: &str = r#"<!doctype html><html><body><script>
const report = (s) => fetch('/result?' + encodeURIComponent(s));
(async () => {
  try {
    const r = await fetch('/out');
    const d = new ImageDecoder({ data: r.body, type: 'image/gif' });
    await d.tracks.ready;
    await d.completed;
    const t = d.tracks.selectedTrack;
    let us = 0, w = 0, h = 0;
    for (let i = 0; i < t.frameCount; i++) {
      const f = await d.decode({ frameIndex: i });
      us += f.image.duration; w = f.image.displayWidth; h = f.image.displayHeight;
      f.image.close();
    }
    report('ok frames=' + t.frameCount + ' loops=' + t.repetitionCount + ' duration_us=' + us + ' size=' + w + 'x' + h);
  } catch (e) { report('error ' + e); }
})();
setTimeout(() => report('timeout'), 60000);
</script></body></html>"#;

fn serve(
    stream: TcpStream,
    video: &[u8],
    content_type: &str,
    page: &str,
    results: &mpsc::Sender<String>,
) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some(r) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
            let (a, b) = r.trim().split_once('-').context("range")?;
            let start: usize = a.parse()?;
            let end: usize = if b.is_empty() {
                video.len() - 1
            } else {
                b.parse()?
            };
            range = Some((start, end.min(video.len() - 1)));
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut out = stream;
    if let Some(q) = path.strip_prefix("/result?") {
        let text = percent_decode(q);
        let _ = results.send(text);
        write!(out, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")?;
    } else if path == "/out" {
        match range {
            Some((a, b)) if a <= b => {
                write!(
                    out,
                    "HTTP/1.1 206 Partial Content\r\nContent-Type: {content_type}\r\nAccept-Ranges: bytes\r\nContent-Range: bytes {a}-{b}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    video.len(),
                    b - a + 1
                )?;
                out.write_all(&video[a..=b])?;
            }
            _ => {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nAccept-Ranges: bytes\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    video.len()
                )?;
                out.write_all(video)?;
            }
        }
    } else if path == "/" || path == "/index.html" {
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
            page.len()
        )?;
    } else {
        write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
    }
    Ok(())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(v) if b[i] == b'%' => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Asks the browser to quit (SIGTERM lets it reap its helper processes),
/// then ends whatever is left of its process group.
fn stop_browser(child: &mut std::process::Child) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    for _ in 0..50 {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
}

/// Serves `video` (as `content_type`) and `page` to headless Chromium and
/// returns what the page reported.
fn play_in_chromium(
    dir: &Path,
    video: Vec<u8>,
    content_type: &'static str,
    page: &'static str,
) -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = serve(stream, &video, content_type, page, &tx);
        }
    });

    let profile = dir.join("chromium-profile");
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--autoplay-policy=no-user-gesture-required",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("http://{addr}/index.html"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so the browser and its helpers are ended
        // together by group id below.
        .process_group(0)
        .spawn()
        .context("starting chromium (CI must install Debian's `chromium` package)")?;
    let result = rx.recv_timeout(BROWSER_TIMEOUT);
    stop_browser(&mut child);
    let result = result.context("chromium reported nothing")?;
    eprintln!("chromium: {result}");
    Ok(result)
}

/// The value of `key=value` in a page's report.
fn field<'a>(result: &'a str, key: &str) -> Result<&'a str> {
    let Some(rest) = result.strip_prefix("ok ") else {
        bail!("chromium: {result}");
    };
    rest.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .with_context(|| format!("{key} in {result}"))
}

/// Checks a `<video>` report: the duration within `tolerance` seconds of
/// the fixture's at `f`, the size, no error, and the frame near the end
/// drawn.
fn check_played(result: &str, f: Fps, tolerance: f64) -> Result<()> {
    let expected = FRAMES as f64 * f64::from(f.den()) / f64::from(f.num());
    let get = |k: &str| field(result, k);
    let duration: f64 = get("duration")?.parse()?;
    ensure!(
        (duration - expected).abs() < tolerance,
        "duration {duration}, expected {expected} ({FRAMES} frames at {f}): {result}"
    );
    ensure!(get("size")? == format!("{WIDTH}x{HEIGHT}"), "{result}");
    ensure!(get("error")? == "none", "{result}");
    let lit: u64 = get("lit")?.parse()?;
    ensure!(
        lit > u64::from(WIDTH * HEIGHT) / 4,
        "the frame near the end did not draw: {result}"
    );
    Ok(())
}

#[test]
fn output_plays_in_headless_chromium() -> Result<()> {
    let tmp = temp_dir();
    let dir = tmp.path();
    let f = fps(30_000, 1001);
    let plan = fixture_plan(f, 11); // 7 chunks
    let chunks = make_chunks(&dir.join("c"), &plan, Mode::Crf, Some(PcmFormat::S16le))?;
    let output: PathBuf = out_path(dir, "out.mp4");
    combine_chunks(&chunks, &CombineOptions::new(f), &output)?;
    let result = play_in_chromium(dir, std::fs::read(&output)?, "video/mp4", PAGE)?;
    // Chromium keeps media time in microseconds.
    check_played(&result, f, 1e-6)
}

#[test]
fn vp9_and_av1_webm_play_in_headless_chromium() -> Result<()> {
    let tmp = temp_dir();
    let dir = tmp.path();
    let f = fps(30, 1);
    let plan = fixture_plan(f, 30); // 30 + 30 + 16 frames
    for (codec, args) in [
        ("vp9", &crate::codecs::VP9[..]),
        ("av1", &crate::codecs::AV1[..]),
    ] {
        let chunks =
            crate::codecs::chunks(&dir.join(codec), &plan, "mkv", |_, first, count, out| {
                crate::codecs::encode(first, count, (WIDTH, HEIGHT), "", &[], args, out)
            });
        let output = out_path(dir, &format!("{codec}.webm"));
        combine_chunks(
            &chunks,
            &crate::codecs::options(&plan, combine::Container::Webm),
            &output,
        )?;
        let result = play_in_chromium(dir, std::fs::read(&output)?, "video/webm", PAGE)
            .with_context(|| codec.to_owned())?;
        // WebM keeps time in milliseconds.
        check_played(&result, f, 1e-3).with_context(|| codec.to_owned())?;
    }
    Ok(())
}

#[test]
fn gif_plays_and_loops_in_headless_chromium_for_its_exact_duration() -> Result<()> {
    let tmp = temp_dir();
    let dir = tmp.path();
    let f = fps(30, 1);
    let plan = fixture_plan(f, 30);
    let chunks = crate::codecs::gif_chunks(dir, &plan, 256);
    let output = out_path(dir, "out.gif");
    combine_chunks(
        &chunks,
        &crate::codecs::options(&plan, combine::Container::Gif),
        &output,
    )?;
    let result = play_in_chromium(dir, std::fs::read(&output)?, "image/gif", GIF_PAGE)?;
    ensure!(field(&result, "frames")? == FRAMES.to_string(), "{result}");
    ensure!(field(&result, "loops")? == "Infinity", "{result}");
    ensure!(
        field(&result, "size")? == format!("{WIDTH}x{HEIGHT}"),
        "{result}"
    );
    // 76 frames at 30 fps: exactly 253 hundredths (delays 3, 3, 4, …).
    ensure!(field(&result, "duration_us")? == "2530000", "{result}");
    Ok(())
}
