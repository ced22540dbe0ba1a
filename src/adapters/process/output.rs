//! A program's output as the supervisor drains it, never more than a bound
//! in this (root) process's memory: threads read our own pipes; one keeps
//! only the last [`MAX_OUTPUT`] bytes (the combined output, or stderr when
//! stdout is read apart), the other hands stdout over in chunks, through a
//! channel of a few chunks, to a consumer the supervisor calls on its own
//! thread (restic's snapshot list is read that way, whatever its length).

use std::collections::VecDeque;
use std::io::{PipeReader, Read};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use super::MAX_OUTPUT;
use crate::ports::Deadline;

/// Bytes read from stdout at a time.
const CHUNK: usize = 64 * 1024;
/// Chunks read ahead of the consumer: stdout costs at most this many
/// chunks (plus the one being read and the one being consumed).
const CHUNKS_AHEAD: usize = 4;

/// The last [`MAX_OUTPUT`] bytes of a pipe, read by a thread until EOF.
/// Should the pipe never close, the thread stays blocked on it (holding at
/// most [`MAX_OUTPUT`] bytes) until it does.
pub(super) struct OutputTail {
    kept: Arc<Mutex<VecDeque<u8>>>,
    /// Disconnected once the thread has seen EOF.
    done: mpsc::Receiver<()>,
}

impl OutputTail {
    pub(super) fn read(mut pipe: PipeReader) -> anyhow::Result<Self> {
        let kept = Arc::new(Mutex::new(VecDeque::with_capacity(MAX_OUTPUT)));
        let (done_tx, done) = mpsc::channel::<()>();
        let shared = kept.clone();
        std::thread::Builder::new()
            .name("program-output".to_owned())
            .spawn(move || {
                let _done = done_tx;
                let mut chunk = vec![0; 64 * 1024];
                loop {
                    match pipe.read(&mut chunk) {
                        Ok(0) => return,
                        Ok(n) => keep_tail(&mut lock(&shared), &chunk[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => return,
                    }
                }
            })
            .context("starting the thread that reads the program's output")?;
        Ok(OutputTail { kept, done })
    }

    /// Whether the output has ended, waiting up to `limit` for it.
    pub(super) fn complete_within(&self, limit: Duration) -> bool {
        !matches!(
            self.done.recv_timeout(limit),
            Err(RecvTimeoutError::Timeout)
        )
    }

    /// What was kept so far, as lossy UTF-8.
    pub(super) fn text(&self) -> String {
        let kept = lock(&self.kept);
        let (front, back) = kept.as_slices();
        String::from_utf8_lossy(&[front, back].concat()).into_owned()
    }
}

/// stdout in chunks, read by a thread until EOF; at most [`CHUNKS_AHEAD`]
/// wait for the consumer (the thread blocks, and with it the program's
/// writes, until they are taken). The thread ends at EOF or when this is
/// dropped and it has a chunk to hand over.
pub(super) struct Chunks {
    chunks: Receiver<Vec<u8>>,
    ended: bool,
}

impl Chunks {
    pub(super) fn read(mut pipe: PipeReader) -> anyhow::Result<Self> {
        let (tx, chunks) = mpsc::sync_channel::<Vec<u8>>(CHUNKS_AHEAD);
        std::thread::Builder::new()
            .name("program-stdout".to_owned())
            .spawn(move || loop {
                let mut chunk = vec![0; CHUNK];
                match pipe.read(&mut chunk) {
                    Ok(0) => return,
                    Ok(n) => {
                        chunk.truncate(n);
                        if tx.send(chunk).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            })
            .context("starting the thread that reads the program's stdout")?;
        Ok(Chunks {
            chunks,
            ended: false,
        })
    }

    /// Hands what arrives to `sink` until stdout ends (true) or `until`
    /// passes (false). Returns once `until` has passed even if chunks keep
    /// coming, after handing over at least what is ready now.
    fn drain_until(&mut self, until: Deadline, sink: &mut dyn FnMut(&[u8])) -> bool {
        while !self.ended {
            match self.chunks.recv_timeout(until.remaining()) {
                Ok(chunk) => {
                    sink(&chunk);
                    if until.reached() {
                        return false;
                    }
                }
                Err(RecvTimeoutError::Timeout) => return false,
                Err(RecvTimeoutError::Disconnected) => self.ended = true,
            }
        }
        true
    }
}

/// The consumer of a program's stdout: each chunk, as it is read.
pub(super) type Sink<'a> = &'a mut dyn FnMut(&[u8]);

/// Everything a running program prints, as the supervisor waits on it:
/// either stdout and stderr combined (the tail kept), or stdout handed to a
/// consumer and stderr's tail kept apart.
pub(super) struct Output<'a> {
    tail: OutputTail,
    stdout: Option<(Chunks, Sink<'a>)>,
}

impl<'a> Output<'a> {
    /// stdout and stderr through one pipe, its tail kept.
    pub(super) fn combined(tail: OutputTail) -> Self {
        Output { tail, stdout: None }
    }

    /// stdout handed to `sink`, stderr's tail kept.
    pub(super) fn split(
        stdout: Chunks,
        sink: &'a mut dyn FnMut(&[u8]),
        stderr: OutputTail,
    ) -> Self {
        Output {
            tail: stderr,
            stdout: Some((stdout, sink)),
        }
    }

    /// Whether all the output has ended, waiting until `until` at most for
    /// it and handing stdout to its consumer meanwhile.
    pub(super) fn complete_by(&mut self, until: Deadline) -> bool {
        if let Some((chunks, sink)) = &mut self.stdout {
            if !chunks.drain_until(until, &mut **sink) {
                return false;
            }
        }
        self.tail.complete_within(until.remaining())
    }

    /// The tail kept: the combined output, or stderr's.
    pub(super) fn text(&self) -> String {
        self.tail.text()
    }
}

fn lock(kept: &Mutex<VecDeque<u8>>) -> std::sync::MutexGuard<'_, VecDeque<u8>> {
    kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Appends `bytes`, keeping only the last [`MAX_OUTPUT`] bytes.
pub(super) fn keep_tail(kept: &mut VecDeque<u8>, bytes: &[u8]) {
    let bytes = &bytes[bytes.len().saturating_sub(MAX_OUTPUT)..];
    let excess = (kept.len() + bytes.len()).saturating_sub(MAX_OUTPUT);
    kept.drain(..excess);
    kept.extend(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_tail_of_the_output_is_kept() {
        let mut kept = VecDeque::new();
        keep_tail(&mut kept, b"short");
        assert_eq!(kept, b"short");
        keep_tail(&mut kept, &vec![b'b'; MAX_OUTPUT - 1]);
        assert_eq!(kept.len(), MAX_OUTPUT);
        assert_eq!(kept.front(), Some(&b't'));
        let mut bytes = vec![b'a'; 10];
        bytes.extend(vec![b'c'; MAX_OUTPUT]);
        keep_tail(&mut kept, &bytes);
        assert_eq!(kept, vec![b'c'; MAX_OUTPUT]);
    }

    #[test]
    fn stdout_chunks_reach_the_consumer_in_order_and_end() {
        let (reader, mut writer) = std::io::pipe().expect("pipe");
        let (err_reader, err_writer) = std::io::pipe().expect("pipe");
        let writing = std::thread::spawn(move || {
            use std::io::Write;
            for i in 0..1000u32 {
                writer.write_all(format!("{i},").as_bytes()).expect("write");
            }
        });
        drop(err_writer);
        let mut seen = Vec::new();
        let mut sink = |chunk: &[u8]| seen.extend_from_slice(chunk);
        let mut output = Output::split(
            Chunks::read(reader).expect("reader"),
            &mut sink,
            OutputTail::read(err_reader).expect("tail"),
        );
        assert!(output.complete_by(Deadline::after(Duration::from_secs(30))));
        assert!(
            output.complete_by(Deadline::after(Duration::ZERO)),
            "stays complete"
        );
        drop(output);
        writing.join().expect("writer");
        let want: String = (0..1000u32).map(|i| format!("{i},")).collect();
        assert_eq!(String::from_utf8(seen).expect("utf-8"), want);
    }
}
