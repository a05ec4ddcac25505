//! The output plays in a browser: headless Chromium (Debian's `chromium`,
//! which CI must install) loads it in a `<video>` element from a page this
//! test serves on 127.0.0.1, checks `duration`, seeks near the end, draws the
//! frame to a canvas and reports back over HTTP.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use combine::{CombineOptions, PcmFormat, combine_chunks};

use crate::support::*;

/// How long Chromium gets to load, seek, draw and report.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

const PAGE: &str = r#"<!doctype html><html><body>
<video id="v" muted preload="auto" src="/out.mp4"></video><canvas id="c"></canvas>
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

fn serve(stream: TcpStream, video: &[u8], results: &mpsc::Sender<String>) -> Result<()> {
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
    } else if path == "/out.mp4" {
        match range {
            Some((a, b)) if a <= b => {
                write!(
                    out,
                    "HTTP/1.1 206 Partial Content\r\nContent-Type: video/mp4\r\nAccept-Ranges: bytes\r\nContent-Range: bytes {a}-{b}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    video.len(),
                    b - a + 1
                )?;
                out.write_all(&video[a..=b])?;
            }
            _ => {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nAccept-Ranges: bytes\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    video.len()
                )?;
                out.write_all(video)?;
            }
        }
    } else if path == "/" || path == "/index.html" {
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
            PAGE.len()
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

#[test]
fn output_plays_in_headless_chromium() -> Result<()> {
    let tmp = temp_dir();
    let dir = tmp.path();
    let f = fps(30_000, 1001);
    let plan = fixture_plan(f, 11); // 7 chunks
    let chunks = make_chunks(&dir.join("c"), &plan, Mode::Crf, Some(PcmFormat::S16le))?;
    let output: PathBuf = out_path(dir, "out.mp4");
    combine_chunks(&chunks, &CombineOptions::new(f), &output)?;
    let video = std::fs::read(&output)?;

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = serve(stream, &video, &tx);
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

    let expected = FRAMES as f64 * f64::from(f.den()) / f64::from(f.num());
    let Some(rest) = result.strip_prefix("ok ") else {
        bail!("chromium: {result}");
    };
    let get = |k: &str| {
        rest.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .with_context(|| format!("{k} in {result}"))
    };
    let duration: f64 = get("duration")?.parse()?;
    // Chromium keeps media time in microseconds.
    ensure!(
        (duration - expected).abs() < 1e-6,
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
