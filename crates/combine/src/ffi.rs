//! The two places where ffmpeg-next 9 has no safe accessor. Kept to one
//! small module so the unsafe surface is easy to audit.
#![allow(unsafe_code)] // ffmpeg-next 9 exposes no setter for `codec_tag`

use ffmpeg_next as ffmpeg;

/// Clears a stream's container-specific codec tag. The MPEG-TS demuxer sets
/// it to the TS stream type, which the MP4 muxer rejects; cleared, the MP4
/// muxer picks `avc1` itself (as the ffmpeg CLI does for stream copy).
pub(crate) fn clear_codec_tag(params: &mut ffmpeg::codec::Parameters) {
    // SAFETY: `params` owns a valid, exclusively borrowed AVCodecParameters;
    // writing a plain integer field cannot invalidate it.
    unsafe {
        (*params.as_mut_ptr()).codec_tag = 0;
    }
}

/// Sets a stream's codec tag to the four characters `tag` (e.g. `hvc1`).
pub(crate) fn set_codec_tag(params: &mut ffmpeg::codec::Parameters, tag: [u8; 4]) {
    // SAFETY: as in `clear_codec_tag`: a plain integer field of a valid,
    // exclusively borrowed AVCodecParameters.
    unsafe {
        (*params.as_mut_ptr()).codec_tag = u32::from_le_bytes(tag);
    }
}
