//! Overlapping I/O with hashing: a writer that batches bytes and hands them to a sink on
//! another thread, and a NAR visitor that hands entries to another thread, so that walking
//! and reading a tree, SHA-256 and reference scanning, and writing a copy each get a thread.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};

use crate::nix::nar::NarVisitor;

/// Bytes per batch handed to the sink thread.
const BATCH: usize = 1 << 20;
/// Batches in flight between the two threads.
const DEPTH: usize = 4;

struct Batcher {
    tx: Option<SyncSender<Vec<u8>>>,
    spare: Receiver<Vec<u8>>,
    buf: Vec<u8>,
}

impl Batcher {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH));
        let full = std::mem::replace(&mut self.buf, next);
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| io::Error::other("sink closed"))?;
        tx.send(full)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "sink thread stopped"))
    }
}

impl Write for Batcher {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            let room = BATCH - self.buf.len();
            let n = room.min(rest.len());
            self.buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.buf.len() == BATCH {
                self.send()?;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Run `body` with a writer whose bytes reach `sink` on a second thread, in order. Returns
/// what `body` returned; an error from `sink` is returned instead of a broken-pipe error the
/// body may have seen.
pub fn with_background_sink<R>(
    sink: &mut (dyn Write + Send),
    body: impl FnOnce(&mut dyn Write) -> R,
) -> io::Result<R> {
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Vec<u8>>(DEPTH);
        let (spare_tx, spare_rx) = channel::<Vec<u8>>();
        let consumer = scope.spawn(move || -> io::Result<()> {
            for mut batch in rx {
                sink.write_all(&batch)?;
                batch.clear();
                let _ = spare_tx.send(batch);
            }
            sink.flush()
        });
        let mut batcher = Batcher {
            tx: Some(tx),
            spare: spare_rx,
            buf: Vec::with_capacity(BATCH),
        };
        let result = body(&mut batcher);
        let sent = batcher.send();
        batcher.tx = None;
        let consumed = consumer
            .join()
            .map_err(|_| io::Error::other("sink thread panicked"))?;
        consumed?;
        sent?;
        Ok(result)
    })
}

/// A NAR entry event, owned so it can cross threads.
enum Event {
    Directory(PathBuf),
    FileStart(PathBuf, bool, u64),
    Data(Vec<u8>),
    FileEnd,
    Symlink(PathBuf, OsString),
}

/// Events in flight between the walking thread and the visitor's thread.
const EVENT_DEPTH: usize = 64;

struct Forward {
    tx: SyncSender<Event>,
}

impl Forward {
    fn send(&self, event: Event) -> io::Result<()> {
        self.tx
            .send(event)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "visitor thread stopped"))
    }
}

impl NarVisitor for Forward {
    fn directory(&mut self, rel: &Path) -> io::Result<()> {
        self.send(Event::Directory(rel.to_path_buf()))
    }
    fn file_start(&mut self, rel: &Path, executable: bool, size: u64) -> io::Result<()> {
        self.send(Event::FileStart(rel.to_path_buf(), executable, size))
    }
    fn file_data(&mut self, data: &[u8]) -> io::Result<()> {
        self.send(Event::Data(data.to_vec()))
    }
    fn file_end(&mut self) -> io::Result<()> {
        self.send(Event::FileEnd)
    }
    fn symlink(&mut self, rel: &Path, target: &std::ffi::OsStr) -> io::Result<()> {
        self.send(Event::Symlink(rel.to_path_buf(), target.to_os_string()))
    }
}

/// Run `body` with a visitor whose events reach `visitor` on a second thread, in order (for
/// copying a tree while the calling thread reads it). An error from `visitor` is returned
/// instead of the broken-pipe error the body then sees.
pub fn with_background_visitor<R>(
    visitor: &mut (dyn NarVisitor + Send),
    body: impl FnOnce(&mut dyn NarVisitor) -> R,
) -> io::Result<R> {
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Event>(EVENT_DEPTH);
        let consumer = scope.spawn(move || -> io::Result<()> {
            for event in rx {
                match event {
                    Event::Directory(rel) => visitor.directory(&rel)?,
                    Event::FileStart(rel, executable, size) => {
                        visitor.file_start(&rel, executable, size)?
                    }
                    Event::Data(data) => visitor.file_data(&data)?,
                    Event::FileEnd => visitor.file_end()?,
                    Event::Symlink(rel, target) => visitor.symlink(&rel, &target)?,
                }
            }
            Ok(())
        });
        let mut forward = Forward { tx };
        let result = body(&mut forward);
        drop(forward);
        consumer
            .join()
            .map_err(|_| io::Error::other("visitor thread panicked"))??;
        Ok(result)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_arrive_in_order() {
        let mut out = Vec::new();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7) as u8).collect();
        with_background_sink(&mut out, |w| {
            for chunk in data.chunks(12_345) {
                w.write_all(chunk).unwrap();
            }
        })
        .unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn sink_errors_come_back() {
        struct Fails;
        impl Write for Fails {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let err = with_background_sink(&mut Fails, |w| {
            let _ = w.write_all(&vec![0u8; 10 << 20]);
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
    }
}

#[cfg(test)]
mod visitor_tests {
    use super::*;

    #[derive(Default)]
    struct Record(Vec<String>);

    impl NarVisitor for Record {
        fn directory(&mut self, rel: &Path) -> io::Result<()> {
            self.0.push(format!("d {}", rel.display()));
            Ok(())
        }
        fn file_data(&mut self, data: &[u8]) -> io::Result<()> {
            if data == b"fail" {
                return Err(io::Error::other("disk full"));
            }
            self.0.push(format!("data {}", data.len()));
            Ok(())
        }
    }

    #[test]
    fn events_arrive_in_order_and_errors_come_back() {
        let mut rec = Record::default();
        with_background_visitor(&mut rec, |v| {
            v.directory(Path::new("")).unwrap();
            v.file_data(b"abc").unwrap();
            v.directory(Path::new("x")).unwrap();
        })
        .unwrap();
        assert_eq!(rec.0, ["d ", "data 3", "d x"]);
        let err = with_background_visitor(&mut Record::default(), |v| {
            let _ = v.file_data(b"fail");
            // Later sends fail once the visitor has stopped.
            for _ in 0..1000 {
                if v.file_data(b"more").is_err() {
                    break;
                }
            }
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
    }
}
