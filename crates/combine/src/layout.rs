//! The chunk list, checked before anything is written: order, gaps and
//! duplicates; each chunk against the plan and against its neighbours; the
//! whole against the expected frame count; the PCM files against their spans.

use chunker::timebase::{AUDIO_CHANNELS, Fps, MPEG_TS_CLOCK_HZ, SampleSpan};
use chunker::{Chunk, ChunkIndex};

use crate::{ChunkArtifact, CombineError, CombineOptions, audio};

/// What the chunk list adds up to, once checked.
pub(crate) struct Layout {
    /// The output's frame rate (the composition's divided by
    /// `every_nth_frame`).
    pub(crate) output_fps: Fps,
    /// Output frames in all chunks.
    pub(crate) frames: u64,
    /// Samples of the whole render.
    pub(crate) samples: SampleSpan,
    /// Where the audio track comes from, if there is one.
    pub(crate) audio: AudioPlan,
}

/// The audio track the output gets.
pub(crate) enum AudioPlan {
    /// No audio track.
    None,
    /// The chunks' PCM, in order, each checked against its span.
    Pcm(Vec<audio::PcmPart>),
    /// Silence of the planned length (`enforce_audio_track`).
    Silence,
    /// The chunks' PCM, encoded ahead ([`crate::AudioPrefix`]), complete.
    Encoded(Box<audio::Prefix>),
}

impl Layout {
    /// Checks order, gaps, duplicates and consistency of the planned chunks,
    /// and the PCM file sizes, before anything is written.
    pub(crate) fn check(
        chunks: &[ChunkArtifact],
        options: &CombineOptions,
    ) -> Result<Layout, CombineError> {
        let first = chunks.first().ok_or(CombineError::NoChunks)?;
        let output_fps = output_fps(options.fps, first.chunk.every_nth_frame())?;
        check_no_duplicates(chunks)?;
        check_order(chunks)?;
        let mut tiling = Tiling::starting_at(&first.chunk);
        for a in chunks {
            tiling.add(&a.chunk, options)?;
        }
        tiling.check_total(options.expected_frames, chunks.len())?;
        Ok(Layout {
            output_fps,
            frames: tiling.next_output,
            samples: SampleSpan {
                start: first.chunk.samples().start,
                end: tiling.next_sample,
            },
            audio: AudioPlan::check(first, chunks, options)?,
        })
    }
}

/// The output frame rate, which must have a whole number of 90 kHz ticks per
/// frame (the chunks' MPEG-TS clock) to be re-based exactly.
fn output_fps(fps: Fps, every_nth_frame: u32) -> Result<Fps, CombineError> {
    let output_fps = fps
        .every_nth(every_nth_frame)
        .map_err(|_| CombineError::InvalidOption {
            option: "fps",
            given: format!("{fps} with every_nth_frame {every_nth_frame}"),
            allowed: "a frame rate whose denominator times every_nth_frame fits in 32 bits",
        })?;
    if output_fps.ticks_per_frame(MPEG_TS_CLOCK_HZ).is_none() {
        return Err(CombineError::InvalidOption {
            option: "fps",
            given: output_fps.to_string(),
            allowed: "an output frame rate with a whole number of 90 kHz ticks per frame (24000/1001 has none)",
        });
    }
    Ok(output_fps)
}

/// No planned chunk may appear twice.
fn check_no_duplicates(chunks: &[ChunkArtifact]) -> Result<(), CombineError> {
    for (pos, a) in chunks.iter().enumerate() {
        let idx = a.chunk.index();
        if let Some(earlier) = chunks[..pos].iter().position(|b| b.chunk.index() == idx) {
            return Err(CombineError::DuplicateChunk {
                index: idx,
                first: earlier,
                second: pos,
            });
        }
    }
    Ok(())
}

/// Position `i` holds chunk `i`: a chunk elsewhere in the list is out of
/// order, one nowhere in it is missing.
fn check_order(chunks: &[ChunkArtifact]) -> Result<(), CombineError> {
    for (pos, a) in chunks.iter().enumerate() {
        let expected = position_index(pos);
        let found = a.chunk.index();
        if found == expected {
            continue;
        }
        if chunks.iter().any(|b| b.chunk.index() == expected) {
            return Err(CombineError::OutOfOrder {
                position: pos,
                expected,
                found,
            });
        }
        let expected_frame = chunks[..pos]
            .iter()
            .map(|b| b.chunk.frame_count())
            .sum::<u64>();
        return Err(CombineError::MissingChunk {
            index: expected,
            expected_frame,
        });
    }
    Ok(())
}

/// The chunk index that belongs at list position `pos`.
fn position_index(pos: usize) -> ChunkIndex {
    ChunkIndex(u32::try_from(pos).unwrap_or(u32::MAX))
}

/// Where the next chunk must start, as the chunks so far tile the render:
/// every chunk shares chunk 0's `every_nth_frame` and composition start and
/// continues its predecessor's output frames, frames and samples exactly.
struct Tiling {
    every_nth_frame: u32,
    composition_start: chunker::timebase::FrameIndex,
    next_output: u64,
    next_frame: u64,
    next_sample: chunker::timebase::SampleIndex,
}

impl Tiling {
    fn starting_at(c0: &Chunk) -> Tiling {
        Tiling {
            every_nth_frame: c0.every_nth_frame(),
            composition_start: c0.composition_start(),
            next_output: 0,
            next_frame: c0.frames().first.0,
            next_sample: c0.samples().start,
        }
    }

    /// Checks that `c` continues the chunks so far and fits the options.
    fn add(&mut self, c: &Chunk, options: &CombineOptions) -> Result<(), CombineError> {
        let mismatch = |field: &'static str, expected: String, found: String| {
            Err(CombineError::PlanMismatch {
                chunk: c.index(),
                field,
                expected,
                found,
            })
        };
        let nth = self.every_nth_frame;
        if c.every_nth_frame() != nth {
            return mismatch(
                "every_nth_frame",
                nth.to_string(),
                c.every_nth_frame().to_string(),
            );
        }
        if c.composition_start() != self.composition_start {
            return mismatch(
                "composition start",
                self.composition_start.to_string(),
                c.composition_start().to_string(),
            );
        }
        if c.first_output_frame() != self.next_output {
            return mismatch(
                "first output frame",
                self.next_output.to_string(),
                c.first_output_frame().to_string(),
            );
        }
        let planned_frames = c.frames().len().div_ceil(u64::from(nth));
        if c.frame_count() != planned_frames {
            return mismatch(
                "output frame count",
                format!("{planned_frames} (frames {} every {nth})", c.frames()),
                c.frame_count().to_string(),
            );
        }
        if c.frames().first.0 != self.next_frame {
            return mismatch(
                "first frame",
                self.next_frame.to_string(),
                c.frames().first.to_string(),
            );
        }
        let span = options.fps.sample_span_of(c.frames(), options.sample_rate);
        if c.samples() != span || c.samples().start != self.next_sample {
            return mismatch(
                "sample span",
                format!(
                    "{span} (frames {} at {} fps, {} Hz)",
                    c.frames(),
                    options.fps,
                    options.sample_rate
                ),
                c.samples().to_string(),
            );
        }
        self.next_output += c.frame_count();
        self.next_frame = c.frames().last.0 + 1;
        self.next_sample = c.samples().end;
        Ok(())
    }

    /// With the render's frame count known, chunks missing at the end are
    /// detected too.
    fn check_total(&self, expected: Option<u64>, chunks: usize) -> Result<(), CombineError> {
        let found = self.next_output;
        match expected {
            Some(expected) if found < expected => Err(CombineError::MissingChunk {
                index: position_index(chunks),
                expected_frame: found,
            }),
            Some(expected) if found > expected => Err(CombineError::InvalidOption {
                option: "expected_frames",
                given: format!("{expected} (the chunks hold {found})"),
                allowed: "the sum of the chunks' planned frame counts",
            }),
            _ => Ok(()),
        }
    }
}

impl AudioPlan {
    /// Audio in all chunks or none (as `first`, chunk 0); every PCM file
    /// exactly its span.
    fn check(
        first: &ChunkArtifact,
        chunks: &[ChunkArtifact],
        options: &CombineOptions,
    ) -> Result<AudioPlan, CombineError> {
        let has = |a: &ChunkArtifact| if a.audio.is_some() { "has" } else { "has no" };
        if let Some(odd) = chunks
            .iter()
            .find(|a| a.audio.is_some() != first.audio.is_some())
        {
            return Err(CombineError::MixedAudio {
                chunk: odd.chunk.index(),
                has: has(odd),
                first_has: has(first),
            });
        }
        if first.audio.is_some() {
            let parts = chunks.iter().map(pcm_part).collect::<Result<_, _>>()?;
            Ok(AudioPlan::Pcm(parts))
        } else if options.enforce_audio_track {
            Ok(AudioPlan::Silence)
        } else {
            Ok(AudioPlan::None)
        }
    }
}

/// A chunk's PCM, once its file size matches its planned span.
pub(crate) fn pcm_part(a: &ChunkArtifact) -> Result<audio::PcmPart, CombineError> {
    let pcm = a
        .audio
        .as_ref()
        .expect("every chunk has audio: AudioPlan::check compared them all with chunk 0");
    let span = a.chunk.samples();
    let bps = pcm.format.bytes_per_sample();
    let expected_bytes = span.len() * u64::from(AUDIO_CHANNELS) * bps as u64;
    let found_bytes = std::fs::metadata(&pcm.path)
        .map_err(|source| CombineError::Io {
            chunk: a.chunk.index(),
            path: pcm.path.clone(),
            source,
        })?
        .len();
    if found_bytes != expected_bytes {
        return Err(CombineError::SampleCount {
            chunk: a.chunk.index(),
            path: pcm.path.clone(),
            span,
            samples: span.len(),
            channels: AUDIO_CHANNELS,
            bytes_per_sample: bps as u8,
            expected_bytes,
            found_bytes,
        });
    }
    Ok(audio::PcmPart {
        chunk: a.chunk.index(),
        path: pcm.path.clone(),
        format: pcm.format,
        samples: span.len(),
    })
}
