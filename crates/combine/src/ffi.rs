//! The places where ffmpeg-next 9 has no safe accessor: a stream's codec
//! tag, a packet's skip-samples side data, and opening an input without
//! `avformat_find_stream_info` or by a path that is not UTF-8. Kept to one
//! small module so the unsafe surface is easy to audit.
#![allow(unsafe_code)] // ffmpeg-next 9 exposes no setter for these

use std::ffi::CString;
use std::path::Path;

use ffmpeg_next as ffmpeg;

/// Opens `path` for demuxing from its container headers alone
/// (`avformat_open_input` with `options`, e.g. `fflags`), without the
/// `avformat_find_stream_info` every `ffmpeg::format::input*` runs: that
/// reads ahead, decodes frames to fill in the codec parameters and reads
/// the file's end to estimate its duration, milliseconds per 1080p chunk.
/// Streams then carry only what the headers say (codec, time base; no
/// frame size or pixel format for MPEG-TS).
pub(crate) fn open_input_headers_only(
    path: &Path,
    options: ffmpeg::Dictionary,
) -> Result<ffmpeg::format::context::Input, ffmpeg::Error> {
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| ffmpeg::Error::InvalidData)?;
    // SAFETY: `ps` starts null, as avformat_open_input requires; on failure
    // it frees the context and leaves `ps` null, on success `ps` is an
    // opened input context whose ownership passes to `Input` (which closes
    // it with avformat_close_input). The dictionary is disowned for the
    // call, which may replace it with the options it did not use; that
    // one is owned again and freed.
    unsafe {
        let mut ps = std::ptr::null_mut();
        let mut opts = options.disown();
        let res = ffmpeg::ffi::avformat_open_input(
            &mut ps,
            path.as_ptr(),
            std::ptr::null_mut(),
            &mut opts,
        );
        drop(ffmpeg::Dictionary::own(opts));
        match res {
            0 => Ok(ffmpeg::format::context::Input::wrap(ps)),
            e => Err(ffmpeg::Error::from(e)),
        }
    }
}

/// Opens `path` for demuxing as `ffmpeg::format::input` does
/// (`avformat_open_input`, then `avformat_find_stream_info`), but from the
/// path's bytes: `ffmpeg-next` takes paths as `&str` and panics on one that
/// is not UTF-8.
pub(crate) fn open_input(path: &Path) -> Result<ffmpeg::format::context::Input, ffmpeg::Error> {
    let mut input = open_input_headers_only(path, ffmpeg::Dictionary::new())?;
    // SAFETY: `input` owns an opened input context; find_stream_info only
    // fills in its streams. On failure `input` is dropped, which closes it.
    let res =
        unsafe { ffmpeg::ffi::avformat_find_stream_info(input.as_mut_ptr(), std::ptr::null_mut()) };
    if res < 0 {
        return Err(ffmpeg::Error::from(res));
    }
    Ok(input)
}

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

/// Samples a packet's `AV_PKT_DATA_SKIP_SAMPLES` side data discards at its
/// end (bytes 4-7, little endian), or 0 without it.
pub(crate) fn discard_end(packet: &ffmpeg::Packet) -> u32 {
    packet
        .side_data()
        .find(|d| d.kind() == ffmpeg::packet::side_data::Type::SkipSamples)
        .and_then(|d| {
            d.data()
                .get(4..8)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        })
        .unwrap_or(0)
}

/// Gives `packet` skip-samples side data discarding `samples` at its end
/// (and none at its start), as the Opus encoder marks its last packet.
pub(crate) fn set_discard_end(packet: &mut ffmpeg::Packet, samples: u32) {
    // SAFETY: `packet` owns a valid AVPacket; av_packet_new_side_data
    // returns a zeroed buffer of the size asked for, or null on failure
    // (then nothing is written).
    unsafe {
        let data = ffmpeg::ffi::av_packet_new_side_data(
            ffmpeg::packet::Mut::as_mut_ptr(packet),
            ffmpeg::ffi::AVPacketSideDataType::AV_PKT_DATA_SKIP_SAMPLES,
            10,
        );
        if !data.is_null() {
            let bytes = std::slice::from_raw_parts_mut(data, 10);
            bytes[4..8].copy_from_slice(&samples.to_le_bytes());
        }
    }
}
