//! The tail of a program's combined output: a thread reads our own pipe
//! and keeps only the last [`MAX_OUTPUT`] bytes, so a chatty program cannot
//! grow this (root) process's memory.

use std::collections::VecDeque;
use std::io::{PipeReader, Read};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use super::MAX_OUTPUT;

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
}
