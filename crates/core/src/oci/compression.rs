//! How a layer blob is compressed, and the one pinned encoder for each kind. An image's
//! digests are part of its identity, so compressed bytes must not drift between builds,
//! machines or the two places strata compresses (the image builder and a push that
//! compresses an uncompressed layer): gzip at level 6 with a zero mtime and no file name,
//! zstd at level 3 without checksum or content size in the frame.

use std::io::{self, Write};

use super::media_type;

/// The pinned zstd level (`--compress zstd`).
pub const ZSTD_LEVEL: i32 = 3;
/// The pinned gzip level (`--compress gzip`).
pub const GZIP_LEVEL: u32 = 6;

/// How layer blobs are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The OCI media type of a layer blob.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => media_type::OCI_LAYER,
            Compression::Gzip => media_type::OCI_LAYER_GZIP,
            Compression::Zstd => media_type::OCI_LAYER_ZSTD,
        }
    }

    /// A layer's compression by its media type (`+gzip`, `.gzip`, `+zstd`, `.zstd` suffixes,
    /// which covers Docker's layer types too).
    pub fn of_media_type(t: &str) -> Compression {
        if t.ends_with("+gzip") || t.ends_with(".gzip") {
            Compression::Gzip
        } else if t.ends_with("+zstd") || t.ends_with(".zstd") {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// Recognise a blob's compression by its first bytes.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The pinned encoder writing into `out` (for `None`, `out` itself).
    pub fn encoder<W: Write>(self, out: W) -> io::Result<Encoder<W>> {
        Ok(match self {
            Compression::None => Encoder::Plain(out),
            Compression::Gzip => Encoder::Gzip(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .write(out, flate2::Compression::new(GZIP_LEVEL)),
            ),
            Compression::Zstd => {
                let mut enc = zstd::Encoder::new(out, ZSTD_LEVEL)?;
                enc.include_checksum(false)?;
                enc.include_contentsize(false)?;
                Encoder::Zstd(enc)
            }
        })
    }
}

/// A pinned compressor (see [`Compression::encoder`]); [`Encoder::finish`] ends the stream.
pub enum Encoder<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::Encoder<'static, W>),
}

impl<W: Write> std::fmt::Debug for Encoder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encoder::Plain(_) => "Encoder::Plain",
            Encoder::Gzip(_) => "Encoder::Gzip",
            Encoder::Zstd(_) => "Encoder::Zstd",
        })
    }
}

impl<W: Write> Encoder<W> {
    /// Write the end of the compressed stream and give back the writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(gz) => gz.finish(),
            Encoder::Zstd(enc) => enc.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(data),
            Encoder::Gzip(gz) => gz.write(data),
            Encoder::Zstd(enc) => enc.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(gz) => gz.flush(),
            Encoder::Zstd(enc) => enc.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::hex;
    use sha2::{Digest as _, Sha256};

    /// 200 KiB that compress somewhat: lines of a counter and a small xorshift stream.
    fn input() -> Vec<u8> {
        let mut data = Vec::new();
        let mut x: u32 = 2_463_534_242;
        let mut i = 0u32;
        while data.len() < 200 * 1024 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            data.extend_from_slice(format!("line {i} {:08x}\n", x % 4096).as_bytes());
            i += 1;
        }
        data
    }

    fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
        let mut enc = c.encoder(Vec::new()).unwrap();
        // In odd-sized pieces: the bytes must not depend on how they were written.
        for piece in data.chunks(7919) {
            enc.write_all(piece).unwrap();
        }
        enc.finish().unwrap()
    }

    /// The digests were recorded from the encoders as strata had them before they moved
    /// here (not computed by this code); a change of flate2's or zstd's output, of a level or
    /// of a header field changes them, and with them every compressed image.
    #[test]
    fn pinned_bytes() {
        let data = input();
        assert_eq!(compress(Compression::None, &data), data);
        let gz = compress(Compression::Gzip, &data);
        assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
        let zst = compress(Compression::Zstd, &data);
        assert_eq!(
            (hex(&Sha256::digest(&gz)), gz.len()),
            (GZIP_PINNED.to_string(), GZIP_PINNED_LEN)
        );
        assert_eq!(
            (hex(&Sha256::digest(&zst)), zst.len()),
            (ZSTD_PINNED.to_string(), ZSTD_PINNED_LEN)
        );
        assert_eq!(Compression::sniff(&gz), Compression::Gzip);
        assert_eq!(Compression::sniff(&zst), Compression::Zstd);
        assert_eq!(Compression::sniff(&data), Compression::None);
    }

    const GZIP_PINNED: &str = "c1b9b62a162b913f6d89765c79c2e467239eaa3327237e1e10b05982ee58c89b";
    const GZIP_PINNED_LEN: usize = 49499;
    const ZSTD_PINNED: &str = "3afbfc775432af9d9388bd34a015aabfb0b69ee9d201cbd7584cf2c35b9b03f7";
    const ZSTD_PINNED_LEN: usize = 49621;

    #[test]
    fn media_types_round_trip() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(Compression::of_media_type(c.media_type()), c);
        }
        assert_eq!(
            Compression::of_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Compression::Gzip
        );
    }
}
