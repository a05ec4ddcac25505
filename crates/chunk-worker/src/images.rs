//! Image sequences: each output frame encoded as one PNG or JPEG file named
//! by its global output index, written atomically (a temporary name in the
//! same directory, renamed when complete), so a killed chunk leaves no
//! half-written frame and a retried one replaces a frame with the same
//! bytes.

use std::io::Write;
use std::path::{Path, PathBuf};

use composition::still::{StillFormat, encode_image};
use spec::{ImageFormat, ImageSequence};

use crate::WorkerError;

/// Writes a chunk's frames into one directory.
#[derive(Debug)]
pub(crate) struct ImageWriter {
    dir: PathBuf,
    sequence: ImageSequence,
    format: StillFormat,
    width: u32,
    height: u32,
}

impl ImageWriter {
    /// A writer of `sequence`'s frames of `width × height` into `dir`
    /// (created if missing).
    pub(crate) fn new(
        dir: &Path,
        sequence: &ImageSequence,
        width: u32,
        height: u32,
    ) -> Result<Self, WorkerError> {
        sequence.validate()?;
        let format = match sequence.format {
            ImageFormat::Png => StillFormat::Png,
            ImageFormat::Jpeg => StillFormat::Jpeg {
                quality: sequence.jpeg_quality,
            },
            ImageFormat::Webp => StillFormat::WebpLossless,
        };
        std::fs::create_dir_all(dir).map_err(|e| WorkerError::io(dir, e))?;
        Ok(ImageWriter {
            dir: dir.to_path_buf(),
            sequence: sequence.clone(),
            format,
            width,
            height,
        })
    }

    /// Encodes the premultiplied RGBA `rgba` and writes it as output frame
    /// `index`; returns the file's size.
    pub(crate) fn write(&self, index: u64, rgba: &[u8]) -> Result<u64, WorkerError> {
        let bytes = encode_image(self.width, self.height, rgba, self.format)?;
        let name = self.sequence.file_name(index);
        let dest = self.dir.join(&name);
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(&self.dir)
            .map_err(|e| WorkerError::io(&self.dir, e))?;
        tmp.write_all(&bytes)
            .map_err(|e| WorkerError::io(tmp.path(), e))?;
        // Readable as any file the worker creates, not tempfile's 0600.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
                .map_err(|e| WorkerError::io(tmp.path(), e))?;
        }
        tmp.persist(&dest)
            .map_err(|e| WorkerError::io(&dest, e.error))?;
        Ok(bytes.len() as u64)
    }
}
