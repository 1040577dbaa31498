//! Layer compression: media types (image-spec `layer.md` and Docker's image
//! manifest v2 schema 2) and streaming decoders.

use std::io::{self, BufRead, BufReader, Read};

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

/// How a layer tar is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (RFC 1952), possibly several members.
    Gzip,
    /// Zstandard (RFC 8878), possibly several frames.
    Zstd,
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// Recognises compressed data by its magic number.
    pub(crate) fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// How to decode a layer of some media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LayerEncoding {
    /// OCI media types say exactly what the compression is.
    Known(Compression),
    /// Docker media types are not reliable (`docker save` and skopeo label
    /// plain tars `…tar.gzip`), so the data is sniffed, as docker does.
    Sniff,
}

/// Maps a layer media type to its encoding; `None` if we cannot unpack it.
pub(crate) fn layer_encoding(media_type: &str) -> Option<LayerEncoding> {
    use LayerEncoding::*;
    Some(match media_type {
        "application/vnd.oci.image.layer.v1.tar" | "application/vnd.oci.image.layer.nondistributable.v1.tar" => {
            Known(Compression::None)
        }
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" => Known(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Known(Compression::Zstd),
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.diff.tar" => Sniff,
        _ => return None,
    })
}

/// Wraps `input` in a decoder; for [`LayerEncoding::Sniff`] peeks at the
/// first bytes to decide. Every decoder reads its input to the end, so that
/// a digest check below it sees every byte (trailing garbage is an error).
pub(crate) fn decoder<'a, R: Read + 'a>(input: R, encoding: LayerEncoding) -> io::Result<Box<dyn Read + 'a>> {
    let mut input = BufReader::with_capacity(64 * 1024, input);
    let compression = match encoding {
        LayerEncoding::Known(c) => c,
        LayerEncoding::Sniff => Compression::sniff(input.fill_buf()?),
    };
    Ok(match compression {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(ZstdDecoder::new(input)),
    })
}

/// A streaming zstd decoder over any number of frames, skipping skippable
/// frames (zstd:chunked puts its table of contents in one), and checking
/// each frame's content checksum when present.
pub(crate) struct ZstdDecoder<R> {
    input: R,
    frame: FrameDecoder,
    in_frame: bool,
    started: bool,
}

impl<R: BufRead> ZstdDecoder<R> {
    pub(crate) fn new(input: R) -> Self {
        ZstdDecoder { input, frame: FrameDecoder::new(), in_frame: false, started: false }
    }

    fn finish_frame(&mut self) -> io::Result<()> {
        self.in_frame = false;
        if let (Some(stored), Some(computed)) =
            (self.frame.get_checksum_from_data(), self.frame.get_calculated_checksum())
        {
            if stored != computed {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "zstd frame checksum mismatch"));
            }
        }
        Ok(())
    }
}

impl<R: BufRead> Read for ZstdDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.in_frame {
                while self.frame.can_collect() == 0 && !self.frame.is_finished() {
                    self.frame
                        .decode_blocks(&mut self.input, BlockDecodingStrategy::UptoBlocks(1))
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                }
                let n = self.frame.read(buf)?;
                if n > 0 {
                    return Ok(n);
                }
                if self.frame.is_finished() {
                    self.finish_frame()?;
                }
                continue;
            }
            if self.input.fill_buf()?.is_empty() {
                if !self.started {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "empty zstd stream"));
                }
                return Ok(0);
            }
            self.started = true;
            match self.frame.reset(&mut self.input) {
                Ok(()) => self.in_frame = true,
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame { length, .. })) => {
                    let skipped = io::copy(&mut (&mut self.input).take(u64::from(length)), &mut io::sink())?;
                    if skipped != u64::from(length) {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "truncated zstd skippable frame"));
                    }
                }
                Err(e) => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_layer_media_types() {
        assert_eq!(
            layer_encoding("application/vnd.oci.image.layer.v1.tar+gzip"),
            Some(LayerEncoding::Known(Compression::Gzip))
        );
        assert_eq!(layer_encoding("application/vnd.docker.image.rootfs.diff.tar.gzip"), Some(LayerEncoding::Sniff));
        assert_eq!(layer_encoding("application/vnd.oci.image.layer.v1.tar+gzip+encrypted"), None);
    }

    #[test]
    fn sniffs_plain_tar_labelled_gzip() {
        let mut d = decoder(&b"plain bytes"[..], LayerEncoding::Sniff).unwrap();
        let mut s = String::new();
        d.read_to_string(&mut s).unwrap();
        assert_eq!(s, "plain bytes");
    }

    #[test]
    fn gzip_with_trailing_garbage_is_an_error() {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b"data").unwrap();
        let mut gz = e.finish().unwrap();
        let mut ok = String::new();
        decoder(&gz[..], LayerEncoding::Known(Compression::Gzip)).unwrap().read_to_string(&mut ok).unwrap();
        assert_eq!(ok, "data");
        gz.extend_from_slice(b"garbage!");
        let mut d = decoder(&gz[..], LayerEncoding::Known(Compression::Gzip)).unwrap();
        assert!(d.read_to_end(&mut Vec::new()).is_err());
    }

    /// A zstd frame of "hello\n" made with `zstd -c` (with content checksum).
    const HELLO_ZST: &[u8] = &[
        0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x58, 0x31, 0x00, 0x00, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x0a, 0x53, 0x88, 0xbd,
        0x91,
    ];

    #[test]
    fn decodes_concatenated_and_skippable_zstd_frames() {
        let mut input = HELLO_ZST.to_vec();
        input.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3]);
        input.extend_from_slice(HELLO_ZST);
        let mut s = String::new();
        ZstdDecoder::new(&input[..]).read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello\nhello\n");
    }

    #[test]
    fn corrupt_zstd_checksum_is_an_error() {
        let mut bad = HELLO_ZST.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(ZstdDecoder::new(&bad[..]).read_to_end(&mut Vec::new()).is_err());
    }

    #[test]
    fn truncated_zstd_is_an_error() {
        let mut d = ZstdDecoder::new(&HELLO_ZST[..10]);
        assert!(d.read_to_end(&mut Vec::new()).is_err());
    }
}
