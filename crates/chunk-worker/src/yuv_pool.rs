//! A render thread's YUV frames, cycled through the encoder and back.
//!
//! Each render thread owns at most [`YUV_FRAMES_PER_THREAD`] converted
//! frames. The encoder hands every frame back after encoding it, and the
//! thread converts its next frame into it: no frame (3 MB at 1080p 4:2:0) is
//! allocated and faulted in per frame, and memory stays flat. A frame
//! remembers which input it holds: since then the renderer has reported
//! where each render changed the RGBA input
//! ([`composition::FrameRenderer::render_frame_changed`]), and only the
//! union of those regions is converted again
//! ([`FrameConverter::convert_changed`]), which gives the bytes of a full
//! conversion.
//!
//! A frame comes back while an encoder may still hold a reference to its
//! buffers (libavcodec 5.1's `avcodec_send_frame` takes one with
//! `av_frame_ref` and drops it once the encoder's callback returned; an
//! encoder that keeps its input keeps it longer). Such a frame is never
//! written: it is dropped (FFmpeg frees it when it lets go) and the slot
//! gets a new frame converted whole. Measured with FFmpeg 5.1: libx264,
//! libx265, libvpx-vp9, libsvtav1 and prores_ks let go of every frame by
//! the time `ChunkEncoder::encode` returns (they copy the picture); the
//! GIF encoder keeps a reference to the last frame (it compares the next
//! one with it), so a GIF chunk allocates a frame per frame as before.

use std::sync::mpsc;

use composition::Damage;

use crate::WorkerError;
use crate::encode::{FrameConverter, YuvFrame};
use crate::pipeline::RENDER_QUEUE_DEPTH;

/// Converted frames a render thread cycles through: one queued for the
/// encoder (or being encoded) and one being converted. A third would only
/// let the thread run one frame further ahead of an encoder that is the
/// slower stage anyway; `limits::chunk_memory` counts these.
pub const YUV_FRAMES_PER_THREAD: usize = RENDER_QUEUE_DEPTH + 1;

/// A converted frame and the pool slot it belongs to.
#[derive(Debug)]
pub(crate) struct Pooled {
    /// Which of its thread's frames this is.
    pub(crate) slot: usize,
    /// The picture.
    pub(crate) frame: YuvFrame,
}

/// One render thread's frames and what changed in its input since each was
/// converted.
pub(crate) struct YuvPool {
    /// Per slot: where the input may differ from what the slot's frame was
    /// converted from.
    stale: Vec<Damage>,
    capacity: usize,
    /// Frames the encoder is done with.
    returned: mpsc::Receiver<Pooled>,
    /// Frames allocated again because a returned one was still referenced.
    pub(crate) replaced: u64,
}

impl YuvPool {
    /// A pool of at most `capacity` (at least 1) frames, handed back
    /// through `returned`.
    pub(crate) fn new(capacity: usize, returned: mpsc::Receiver<Pooled>) -> YuvPool {
        YuvPool {
            stale: Vec::with_capacity(capacity),
            capacity: capacity.max(1),
            returned,
            replaced: 0,
        }
    }

    /// Records that a render changed the input inside `changed`; call it
    /// after every render into the converter's input.
    pub(crate) fn record(&mut self, changed: &Damage) {
        // Consecutive renders often report the same rectangles (a layer's
        // bound is put back, then drawn again): `extend` keeps one of each,
        // and merges those that overlap almost wholly.
        for s in &mut self.stale {
            s.extend(changed);
        }
    }

    /// The frame to convert the next input into: one the encoder handed
    /// back, else a new one while the pool has fewer than its capacity,
    /// else the next one handed back (waiting for it: the encoder is the
    /// slower stage). `None` when the encoder is gone.
    pub(crate) fn target(&mut self) -> Option<Target> {
        match self.returned.try_recv() {
            Ok(p) => Some(Target(Some(p))),
            Err(_) if self.stale.len() < self.capacity => Some(Target(None)),
            Err(mpsc::TryRecvError::Empty) => self.returned.recv().ok().map(|p| Target(Some(p))),
            Err(mpsc::TryRecvError::Disconnected) => None,
        }
    }

    /// The current input of `conv` converted into `target`: a frame handed
    /// back has only what changed since it was converted converted again
    /// (or is replaced by a new frame converted whole if FFmpeg still
    /// references it); a new frame is converted whole.
    ///
    /// # Errors
    /// The converter's.
    pub(crate) fn fill(
        &mut self,
        target: Target,
        conv: &mut FrameConverter,
    ) -> Result<Pooled, WorkerError> {
        let Some(mut p) = target.0 else {
            let frame = conv.convert()?;
            self.stale.push(Damage::default());
            return Ok(Pooled {
                slot: self.stale.len() - 1,
                frame,
            });
        };
        let stale = &mut self.stale[p.slot];
        if p.frame.is_writable() {
            conv.convert_changed(&mut p.frame, stale)?;
        } else {
            // Someone still reads these buffers: leave them to it.
            p.frame = conv.convert()?;
            self.replaced += 1;
        }
        stale.clear();
        Ok(p)
    }
}

/// What [`YuvPool::target`] chose: a frame handed back, or a new one.
#[derive(Debug)]
pub(crate) struct Target(Option<Pooled>);
