//! Overlapping I/O with hashing: a writer that batches bytes and hands them to a sink on
//! another thread, so that walking and reading a tree (one core) runs alongside SHA-256 and
//! reference scanning (the other).

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};

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
