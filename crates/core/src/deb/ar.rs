//! The `ar` archive format a `.deb` is wrapped in: a magic line, then members with a 60-byte
//! text header each, data padded to an even length.

use std::io::{self, Read};

/// The first 8 bytes of every ar archive.
pub const MAGIC: &[u8; 8] = b"!<arch>\n";

/// One member's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub size: u64,
}

/// Errors reading an ar archive.
#[derive(Debug, thiserror::Error)]
pub enum ArError {
    #[error("not an ar archive (bad magic)")]
    BadMagic,
    #[error("bad ar member header: {0}")]
    BadHeader(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads members in order; each member's data must be read (or skipped) before the next.
#[derive(Debug)]
pub struct ArReader<R: Read> {
    input: R,
    /// Bytes of the current member not yet read, plus its padding byte.
    left: u64,
    pad: bool,
}

impl<R: Read> ArReader<R> {
    pub fn new(mut input: R) -> Result<ArReader<R>, ArError> {
        let mut magic = [0u8; 8];
        input
            .read_exact(&mut magic)
            .map_err(|_| ArError::BadMagic)?;
        if &magic != MAGIC {
            return Err(ArError::BadMagic);
        }
        Ok(ArReader {
            input,
            left: 0,
            pad: false,
        })
    }

    /// The next member's header, or `None` at the end.
    pub fn next_member(&mut self) -> Result<Option<Member>, ArError> {
        self.skip_rest()?;
        let mut header = [0u8; 60];
        let mut got = 0;
        while got < header.len() {
            let n = self.input.read(&mut header[got..])?;
            if n == 0 {
                if got == 0 {
                    return Ok(None);
                }
                return Err(ArError::BadHeader("truncated header".into()));
            }
            got += n;
        }
        if &header[58..60] != b"`\n" {
            return Err(ArError::BadHeader("missing end marker".into()));
        }
        let field = |range: std::ops::Range<usize>| {
            String::from_utf8_lossy(&header[range])
                .trim_end()
                .to_string()
        };
        let name = field(0..16).trim_end_matches('/').to_string();
        let size: u64 = field(48..58)
            .parse()
            .map_err(|_| ArError::BadHeader(format!("bad size for member '{name}'")))?;
        self.left = size;
        self.pad = size % 2 == 1;
        Ok(Some(Member { name, size }))
    }

    fn skip_rest(&mut self) -> Result<(), ArError> {
        let skip = self.left + u64::from(self.pad);
        if skip > 0 {
            let copied = io::copy(&mut (&mut self.input).take(skip), &mut io::sink())?;
            if copied != skip && !(copied + 1 == skip && self.pad) {
                return Err(ArError::BadHeader("truncated member".into()));
            }
        }
        self.left = 0;
        self.pad = false;
        Ok(())
    }
}

impl<R: Read> Read for ArReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.input.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated ar member",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, data: &[u8]) -> Vec<u8> {
        let mut h = format!(
            "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            0,
            0,
            0,
            100644,
            data.len()
        )
        .into_bytes();
        h.extend_from_slice(data);
        if data.len() % 2 == 1 {
            h.push(b'\n');
        }
        h
    }

    #[test]
    fn reads_members_with_padding() {
        let mut ar = MAGIC.to_vec();
        ar.extend(member("debian-binary", b"2.0\n"));
        ar.extend(member("odd/", b"abc"));
        ar.extend(member("data.tar.gz", b"xy"));
        let mut r = ArReader::new(ar.as_slice()).unwrap();
        let m = r.next_member().unwrap().unwrap();
        assert_eq!((m.name.as_str(), m.size), ("debian-binary", 4));
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "2.0\n");
        assert_eq!(r.next_member().unwrap().unwrap().name, "odd");
        // Unread data is skipped.
        let last = r.next_member().unwrap().unwrap();
        assert_eq!(last.name, "data.tar.gz");
        let mut d = Vec::new();
        r.read_to_end(&mut d).unwrap();
        assert_eq!(d, b"xy");
        assert!(r.next_member().unwrap().is_none());
    }

    #[test]
    fn rejects_non_ar() {
        assert!(matches!(
            ArReader::new(&b"PK\x03\x04 zip file"[..]),
            Err(ArError::BadMagic)
        ));
    }
}
