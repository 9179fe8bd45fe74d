//! czctl's one writer of human output: lines go to a thread of their own, so that a paused
//! terminal or a pipe nobody reads blocks that thread alone, never the runtime's one thread and
//! the tunnel it serves. At most [`PENDING_LINES`] wait to be written; beyond them lines are
//! dropped and counted, and the count is printed once the output moves again.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::Duration;

/// Lines waiting for the terminal before new ones are dropped.
const PENDING_LINES: usize = 4096;

/// How long the writer rests after writing: lines show at most this late.
const REST: Duration = Duration::from_millis(10);

/// Where a line goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

enum Message {
    Line(Stream, String),
    /// Everything queued before it is written.
    Flushed(mpsc::Sender<()>),
}

struct Terminal {
    queue: SyncSender<Message>,
    dropped: AtomicU64,
}

static TERMINAL: OnceLock<Terminal> = OnceLock::new();

/// Queues `text` as a line of `stream`; never waits.
pub fn line(stream: Stream, text: String) {
    let terminal = TERMINAL.get_or_init(|| {
        let (queue, messages) = mpsc::sync_channel(PENDING_LINES);
        std::thread::spawn(move || write(messages));
        Terminal {
            queue,
            dropped: AtomicU64::new(0),
        }
    });
    if let Err(TrySendError::Full(_)) = terminal.queue.try_send(Message::Line(stream, text)) {
        terminal.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Waits until every line queued so far is written: before czctl exits, or prints on its own.
pub fn flush() {
    let Some(terminal) = TERMINAL.get() else {
        return;
    };
    let (written, done) = mpsc::channel();
    if terminal.queue.send(Message::Flushed(written)).is_ok() {
        let _ = done.recv();
    }
}

/// Writes the queued lines in order, for as long as czctl runs: what was queued meanwhile in one
/// write per run of one stream's lines, then it rests for [`REST`], so that a line a request
/// makes costs no wake-up of this thread (nor a system call) of its own. A closed stdout or
/// stderr loses the lines, not czctl.
fn write(messages: Receiver<Message>) {
    let mut batch = Batch::default();
    while let Ok(first) = messages.recv() {
        let mut next = Some(first);
        while let Some(message) = next {
            let dropped = TERMINAL
                .get()
                .map_or(0, |terminal| terminal.dropped.swap(0, Ordering::Relaxed));
            if dropped > 0 {
                let warning = format!(
                    "warning: {dropped} lines not shown: the output was not read fast enough"
                );
                batch.push(Stream::Stderr, &warning);
            }
            match message {
                Message::Line(stream, text) => batch.push(stream, &text),
                Message::Flushed(written) => {
                    batch.write();
                    let _ = written.send(());
                }
            }
            next = messages.try_recv().ok();
        }
        batch.write();
        std::thread::sleep(REST);
    }
}

/// Lines waiting to be written, as runs of lines of one stream.
#[derive(Default)]
struct Batch {
    runs: Vec<(Stream, Vec<u8>)>,
}

impl Batch {
    /// Adds a line to the run of its stream, or starts a run: the order of lines across stdout
    /// and stderr is kept.
    fn push(&mut self, stream: Stream, text: &str) {
        match self.runs.last_mut() {
            Some((last, bytes)) if *last == stream => {
                bytes.extend_from_slice(text.as_bytes());
                bytes.push(b'\n');
            }
            _ => self.runs.push((stream, format!("{text}\n").into_bytes())),
        }
    }

    /// Writes the lines to the terminal.
    fn write(&mut self) {
        self.write_to(&mut std::io::stdout().lock(), &mut std::io::stderr().lock());
    }

    /// Writes the lines to `stdout` and `stderr`, one write per run.
    fn write_to(&mut self, stdout: &mut dyn Write, stderr: &mut dyn Write) {
        for (stream, bytes) in self.runs.drain(..) {
            let _ = match stream {
                Stream::Stdout => stdout.write_all(&bytes),
                Stream::Stderr => stderr.write_all(&bytes),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Records each write with the stream it went to.
    struct Recorder<'a>(&'a RefCell<Vec<(Stream, String)>>, Stream);

    impl Write for Recorder<'_> {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let text = String::from_utf8_lossy(bytes).into_owned();
            self.0.borrow_mut().push((self.1, text));
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_keep_their_order_across_streams_and_a_run_of_one_stream_is_one_write() {
        let mut batch = Batch::default();
        batch.push(Stream::Stdout, "GET / -> 200");
        batch.push(Stream::Stdout, "GET /a -> 200");
        batch.push(Stream::Stderr, "warning: tunnel lost");
        batch.push(Stream::Stdout, "GET /b -> 200");
        let writes = RefCell::new(Vec::new());
        let (mut stdout, mut stderr) = (
            Recorder(&writes, Stream::Stdout),
            Recorder(&writes, Stream::Stderr),
        );
        batch.write_to(&mut stdout, &mut stderr);
        batch.write_to(&mut stdout, &mut stderr);
        assert_eq!(
            writes.into_inner(),
            [
                (Stream::Stdout, "GET / -> 200\nGET /a -> 200\n".to_owned()),
                (Stream::Stderr, "warning: tunnel lost\n".to_owned()),
                (Stream::Stdout, "GET /b -> 200\n".to_owned()),
            ],
            "written once, in order"
        );
    }
}
