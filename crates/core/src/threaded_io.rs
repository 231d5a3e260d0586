//! Overlapping I/O with hashing: a writer that batches bytes and hands them to a sink on
//! another thread, and a NAR visitor that hands entries to another thread, so that walking
//! and reading a tree, SHA-256 and reference scanning, and writing a copy each get a thread.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use crate::nix::nar::NarVisitor;

/// Bytes per batch handed to the sink thread.
const BATCH: usize = 1 << 20;
/// Batches in all: being filled, queued, or being read by the sink thread.
const BUFFERS: usize = 8;
/// Empty batches the reading thread waits for once it has run out, before it goes on.
const REFILL: usize = BUFFERS / 2;
// The reading thread waits only when it holds none and all are queued or being read, so
// all of them come back: it can wait for any REFILL up to BUFFERS, but for at least one.
const _: () = assert!(BUFFERS >= 2 && REFILL >= 1 && REFILL <= BUFFERS);

/// A sink that lends out its own buffer for file contents, so that they are read from the file
/// straight into the batch the other thread takes, instead of into a scratch buffer first and
/// copied from there on the reading thread (at gigabytes a second the copy costs as much as the
/// read).
pub trait LendingSink: Write {
    /// Memory for the next at most `want` (> 0) bytes of file contents; not empty.
    fn room(&mut self, want: usize) -> io::Result<&mut [u8]>;
    /// The first `n` bytes of the last [`LendingSink::room`] were filled: they are part of the
    /// output, after everything written before.
    fn commit(&mut self, n: usize) -> io::Result<()>;
}

/// Any writer as a [`LendingSink`]: file contents go through a scratch buffer.
#[derive(Debug)]
pub struct Buffered<'a, W: Write + ?Sized> {
    out: &'a mut W,
    buf: Vec<u8>,
    held: usize,
}

impl<'a, W: Write + ?Sized> Buffered<'a, W> {
    /// A scratch buffer of `chunk` bytes in front of `out`.
    pub fn new(out: &'a mut W, chunk: usize) -> Self {
        Buffered {
            out,
            buf: vec![0u8; chunk.max(1)],
            held: 0,
        }
    }
}

impl<W: Write + ?Sized> Write for Buffered<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.out.write(data)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl<W: Write + ?Sized> LendingSink for Buffered<'_, W> {
    fn room(&mut self, want: usize) -> io::Result<&mut [u8]> {
        self.held = want.min(self.buf.len());
        Ok(&mut self.buf[..self.held])
    }
    fn commit(&mut self, n: usize) -> io::Result<()> {
        let n = n.min(self.held);
        self.held = 0;
        self.out.write_all(&self.buf[..n])
    }
}

/// The batches both threads share: filled ones waiting for the sink thread, in order, and
/// empty ones waiting for the reading thread.
///
/// Why not two channels: the reading thread is usually ahead, so it slept on a full queue, and
/// the sink thread woke it after every batch it took (on a virtual machine a wake-up is an
/// interrupt to the other CPU). With channels the hashing thread of a 548 MB `--dry-run` spent
/// 13-20 ms of its 0.34 s outside the sink; with the reading thread spinning instead of
/// sleeping, 1-8 ms. Here the reading thread sleeps until [`REFILL`] batches are free, so it is
/// woken some 80 times for the 523 batches rather than after each, and each side signals the
/// other only when that one is asleep (or the sink thread has stopped).
struct Handoff {
    state: Mutex<HandoffState>,
    /// The sink thread waits here for a filled batch.
    filled_ready: Condvar,
    /// The reading thread waits here for empty batches.
    empty_ready: Condvar,
}

#[derive(Default)]
struct HandoffState {
    /// Filled batches, oldest first: the buffer and how many of its bytes are filled.
    filled: VecDeque<(Vec<u8>, usize)>,
    /// Empty buffers handed back.
    empty: Vec<Vec<u8>>,
    /// Buffers allocated so far, at most [`BUFFERS`].
    made: usize,
    /// The reading thread has sent its last batch (or gave up).
    closed: bool,
    /// The sink thread stopped (failed, or panicked): nothing more is taken.
    sink_gone: bool,
    reader_asleep: bool,
    sink_asleep: bool,
}

impl Handoff {
    /// A hand-off whose reading side starts with one buffer (which it allocates itself).
    fn new() -> Handoff {
        Handoff {
            state: Mutex::new(HandoffState {
                made: 1,
                ..HandoffState::default()
            }),
            filled_ready: Condvar::new(),
            empty_ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HandoffState> {
        // Nothing that runs under the lock can panic, so a poisoned lock still guards a whole
        // state; a thread's panic reaches the caller through `join` (the sink's) or unwinds
        // through `in_background` (the body's, after `Batcher`'s drop closed the queue).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sink_stopped() -> io::Error {
        io::Error::new(io::ErrorKind::BrokenPipe, "sink thread stopped")
    }

    /// Reading side: queue a filled batch.
    fn queue(&self, full: Vec<u8>, used: usize) -> io::Result<()> {
        let mut state = self.lock();
        if state.sink_gone {
            return Err(Self::sink_stopped());
        }
        state.filled.push_back((full, used));
        if state.sink_asleep {
            state.sink_asleep = false;
            self.filled_ready.notify_one();
        }
        Ok(())
    }

    /// Reading side: an empty buffer for the next batch: a new one while fewer than
    /// [`BUFFERS`] exist, else one handed back (after waiting for [`REFILL`] of them).
    fn next_empty(&self) -> io::Result<Vec<u8>> {
        let mut state = self.lock();
        if state.sink_gone {
            return Err(Self::sink_stopped());
        }
        if state.empty.is_empty() && state.made < BUFFERS {
            state.made += 1;
            drop(state);
            return Ok(vec![0u8; BATCH]);
        }
        if state.empty.is_empty() {
            // Asleep while waiting (the sink then wakes it once REFILL are free), not after.
            state = self
                .empty_ready
                .wait_while(state, |s| {
                    s.reader_asleep = s.empty.len() < REFILL && !s.sink_gone;
                    s.reader_asleep
                })
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.sink_gone {
            return Err(Self::sink_stopped());
        }
        Ok(state
            .empty
            .pop()
            .expect("the wait above ends with REFILL >= 1 empty buffers"))
    }

    /// Reading side: no more batches.
    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        if state.sink_asleep {
            state.sink_asleep = false;
            self.filled_ready.notify_one();
        }
    }

    /// Sink side: the next filled batch, or `None` once the reading side closed and all were
    /// taken.
    fn take(&self) -> Option<(Vec<u8>, usize)> {
        let mut state = self
            .filled_ready
            .wait_while(self.lock(), |s| {
                s.sink_asleep = s.filled.is_empty() && !s.closed;
                s.sink_asleep
            })
            .unwrap_or_else(PoisonError::into_inner);
        state.filled.pop_front()
    }

    /// Sink side: a buffer is empty again.
    fn give_back(&self, buf: Vec<u8>) {
        let mut state = self.lock();
        state.empty.push(buf);
        if state.reader_asleep && state.empty.len() >= REFILL {
            state.reader_asleep = false;
            self.empty_ready.notify_one();
        }
    }

    /// Sink side: stopped; the reading side's next batch fails instead of waiting forever.
    fn sink_stopped_now(&self) {
        let mut state = self.lock();
        state.sink_gone = true;
        let unread = std::mem::take(&mut state.filled);
        self.empty_ready.notify_one();
        drop(state);
        drop(unread);
    }
}

/// Marks the sink side stopped when the sink thread ends, however it ends.
struct SinkGone<'a>(&'a Handoff);

impl Drop for SinkGone<'_> {
    fn drop(&mut self) {
        self.0.sink_stopped_now();
    }
}

/// Fills fixed buffers and hands them to the sink thread, which hands them back empty: the
/// buffers are allocated (and their pages faulted in) once, not once per batch.
struct Batcher<'a> {
    handoff: &'a Handoff,
    buf: Vec<u8>,
    used: usize,
}

impl Batcher<'_> {
    /// After a failed [`Batcher::send`] the batcher holds no buffer: every later write fails
    /// the same way.
    fn usable(&self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Err(Handoff::sink_stopped());
        }
        Ok(())
    }

    /// Queue the batch being filled, and start the next.
    fn send(&mut self) -> io::Result<()> {
        if self.used == 0 {
            return Ok(());
        }
        let full = std::mem::take(&mut self.buf);
        let used = std::mem::take(&mut self.used);
        self.handoff.queue(full, used)?;
        self.buf = self.handoff.next_empty()?;
        Ok(())
    }

    /// Queue the last batch (no next one); dropping the batcher then closes the reading side.
    fn finish(mut self) -> io::Result<()> {
        if self.used == 0 {
            return Ok(());
        }
        let full = std::mem::take(&mut self.buf);
        self.handoff.queue(full, self.used)
    }
}

/// The reading side closes however `body` ends, a panic included, so the sink thread is not
/// left waiting.
impl Drop for Batcher<'_> {
    fn drop(&mut self) {
        self.handoff.close();
    }
}

impl Write for Batcher<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.usable()?;
        let mut rest = data;
        while !rest.is_empty() {
            let n = (BATCH - self.used).min(rest.len());
            self.buf[self.used..self.used + n].copy_from_slice(&rest[..n]);
            self.used += n;
            rest = &rest[n..];
            if self.used == BATCH {
                self.send()?;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// File contents are read straight into the batch the sink thread will get.
impl LendingSink for Batcher<'_> {
    fn room(&mut self, want: usize) -> io::Result<&mut [u8]> {
        self.usable()?;
        if self.used == BATCH {
            self.send()?;
        }
        let end = self.used + want.min(BATCH - self.used);
        Ok(&mut self.buf[self.used..end])
    }

    fn commit(&mut self, n: usize) -> io::Result<()> {
        self.usable()?;
        self.used = (self.used + n).min(BATCH);
        if self.used == BATCH {
            self.send()?;
        }
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
    in_background(sink, |b| body(b))
}

/// [`with_background_sink`] whose body gets a [`LendingSink`], so that
/// [`crate::nix::nar::dump_path_into`] and [`crate::image::tar::write_layer_into`] read file
/// contents straight into the batches the sink thread consumes (one thread reads while the
/// other hashes; nothing is copied between them).
pub fn with_background_lending_sink<R>(
    sink: &mut (dyn Write + Send),
    body: impl FnOnce(&mut dyn LendingSink) -> R,
) -> io::Result<R> {
    in_background(sink, |b| body(b))
}

fn in_background<R>(
    sink: &mut (dyn Write + Send),
    body: impl FnOnce(&mut Batcher) -> R,
) -> io::Result<R> {
    let handoff = Handoff::new();
    std::thread::scope(|scope| {
        // The sink gets each batch in one write, in place, and the batch goes back to the pool
        // once written. The batch was filled on the other core: the hashers among the sinks
        // ask for its lines ahead of the hash (`crate::prefetch::in_pieces` says why).
        let handoff = &handoff;
        let consumer = scope.spawn(move || -> io::Result<()> {
            let _gone = SinkGone(handoff);
            while let Some((batch, used)) = handoff.take() {
                sink.write_all(&batch[..used])?;
                handoff.give_back(batch);
            }
            sink.flush()
        });
        let mut batcher = Batcher {
            handoff,
            buf: vec![0u8; BATCH],
            used: 0,
        };
        let result = body(&mut batcher);
        let sent = batcher.finish();
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
    fn nar_through_lent_batches_is_the_plain_nar() {
        use crate::nix::nar::{NoVisitor, dump_path, dump_path_into};
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        // Files that end exactly on, straddle and span several batch boundaries, small ones
        // in between, an executable and a symlink.
        let sizes = [BATCH - 100, 37, 3 * BATCH + 5, 0, BATCH, 1, 700_000, 99];
        for (i, size) in sizes.iter().enumerate() {
            let data: Vec<u8> = (0..*size).map(|j| (j * 31 + i) as u8).collect();
            std::fs::write(root.join("sub").join(format!("f{i}")), data).unwrap();
        }
        let exe = root.join("sub/f1");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("sub/f2", root.join("link")).unwrap();
        let mut plain = Vec::new();
        dump_path(&root, &mut plain, &mut NoVisitor).unwrap();
        let mut lent = Vec::new();
        with_background_lending_sink(&mut lent, |w| dump_path_into(&root, w, &mut NoVisitor))
            .unwrap()
            .unwrap();
        assert_eq!(lent.len(), plain.len());
        assert!(lent == plain, "the NARs differ");
    }

    /// Runs `f` on a thread of its own and returns what it returned; fails the test, instead of
    /// hanging it, if `f` takes longer than `secs`.
    fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(secs))
            .expect("hung: a thread is still waiting")
    }

    /// A reading side that has made all its buffers and asks for an empty one, on a thread of
    /// `scope`, once it is asleep; its answer (the buffer's length) comes on the receiver.
    fn waiting_reader<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        handoff: &'scope Handoff,
    ) -> std::sync::mpsc::Receiver<io::Result<usize>> {
        handoff.lock().made = BUFFERS;
        let (tx, rx) = std::sync::mpsc::channel();
        scope.spawn(move || tx.send(handoff.next_empty().map(|b| b.len())));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !handoff.lock().reader_asleep {
            assert!(
                std::time::Instant::now() < deadline,
                "the reader never slept"
            );
            std::thread::yield_now();
        }
        rx
    }

    #[test]
    fn the_reader_sleeps_until_refill_batches_are_free() {
        let handoff = Handoff::new();
        std::thread::scope(|scope| {
            let rx = waiting_reader(scope, &handoff);
            for _ in 0..REFILL - 1 {
                handoff.give_back(vec![0u8; 7]);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            let early = rx.try_recv().is_ok();
            handoff.give_back(vec![0u8; 7]);
            let got = rx.recv_timeout(std::time::Duration::from_secs(10));
            // A reader still waiting is let go, so that a failure fails rather than hangs.
            handoff.sink_stopped_now();
            assert!(!early, "the reader went on before REFILL batches were free");
            assert_eq!(got.expect("not woken").unwrap(), 7);
            assert_eq!(handoff.lock().empty.len(), REFILL - 1);
        });
    }

    #[test]
    fn a_stopped_sink_wakes_a_waiting_reader_with_an_error() {
        let handoff = Handoff::new();
        std::thread::scope(|scope| {
            let rx = waiting_reader(scope, &handoff);
            handoff.sink_stopped_now();
            let got = rx.recv_timeout(std::time::Duration::from_secs(10));
            let err = got.expect("not woken").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        });
        // and the next queued batch is refused
        assert!(handoff.queue(vec![1], 1).is_err());
    }

    #[test]
    fn a_panicking_body_does_not_leave_the_sink_thread_waiting() {
        let out = within(60, || {
            let mut out = Vec::new();
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                with_background_sink(&mut out, |w| {
                    w.write_all(&vec![5u8; (BUFFERS + 3) * BATCH]).unwrap();
                    panic!("body failed");
                })
            }));
            assert!(caught.is_err());
            out
        });
        // Every full batch was queued before the panic, and the sink wrote them all.
        assert_eq!(out.len(), (BUFFERS + 3) * BATCH);
        assert!(out.iter().all(|b| *b == 5));
    }

    #[test]
    fn a_panicking_sink_comes_back_as_an_error() {
        struct Panics;
        impl Write for Panics {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                panic!("sink failed");
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let err = within(60, || {
            with_background_sink(&mut Panics, |w| {
                for _ in 0..4 * BUFFERS {
                    if w.write_all(&vec![1u8; BATCH]).is_err() {
                        break;
                    }
                }
            })
            .unwrap_err()
        });
        assert_eq!(err.to_string(), "sink thread panicked");
    }

    #[test]
    fn a_sink_that_stops_wakes_a_reader_waiting_for_empty_batches() {
        // The sink fails only after the reader has had time to fill every buffer and sleep.
        struct SlowlyFails;
        impl Write for SlowlyFails {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                std::thread::sleep(std::time::Duration::from_millis(300));
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (err, written, again) = within(60, || {
            let mut written = 0usize;
            let mut again = None;
            let err = with_background_sink(&mut SlowlyFails, |w| {
                for _ in 0..4 * BUFFERS {
                    if w.write_all(&vec![1u8; BATCH]).is_err() {
                        // A write after the failed one fails too (it does not panic).
                        again = Some(w.write(&[1u8; 10]).is_err());
                        break;
                    }
                    written += BATCH;
                }
            })
            .unwrap_err();
            (err, written, again)
        });
        assert_eq!(err.to_string(), "disk full");
        assert!(
            written < 4 * BUFFERS * BATCH,
            "the reader went on to the end"
        );
        assert_eq!(again, Some(true));
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
