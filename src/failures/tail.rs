//! [`TailBuffer`]: the last bytes of a stream, in bounded memory.

/// More than `max_bytes` were pushed: the log is too large to read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the log is longer than {max_bytes} bytes")]
pub struct TooLarge {
    pub max_bytes: u64,
}

/// Keeps the last `tail_bytes` of what is pushed into it, in one ring of at most that size
/// (memory: `tail_bytes`, plus the caller's chunk), and refuses once more than `max_bytes`
/// have been pushed in all. Nothing of what it holds is ever logged: see [`crate::failures`].
#[derive(Debug)]
pub struct TailBuffer {
    /// Grows to `tail_bytes`, then is written round: `buf[start..]` then `buf[..start]` is the
    /// tail, oldest byte first.
    buf: Vec<u8>,
    start: usize,
    tail_bytes: usize,
    max_bytes: u64,
    seen: u64,
}

impl TailBuffer {
    pub fn new(tail_bytes: usize, max_bytes: u64) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            tail_bytes,
            max_bytes,
            seen: 0,
        }
    }

    /// Takes the next chunk of the stream. `Err` once more than `max_bytes` have been pushed
    /// (and for every push after that): stop reading.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), TooLarge> {
        self.seen = self.seen.saturating_add(chunk.len() as u64);
        if self.seen > self.max_bytes {
            return Err(TooLarge {
                max_bytes: self.max_bytes,
            });
        }
        let tail = self.tail_bytes;
        if chunk.len() >= tail {
            self.buf.clear();
            self.buf.extend_from_slice(&chunk[chunk.len() - tail..]);
            self.start = 0;
            return Ok(());
        }
        // Filling up (the ring is not full yet, so `start` is still 0).
        let room = tail - self.buf.len();
        let (fill, mut rest) = chunk.split_at(room.min(chunk.len()));
        self.buf.extend_from_slice(fill);
        // Full: overwrite the oldest bytes, wrapping at most once (the chunk is shorter than
        // the ring).
        while !rest.is_empty() {
            let n = (tail - self.start).min(rest.len());
            self.buf[self.start..self.start + n].copy_from_slice(&rest[..n]);
            self.start = (self.start + n) % tail;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Bytes pushed so far (all of them, not only those kept).
    pub fn bytes_seen(&self) -> u64 {
        self.seen
    }

    /// Bytes held now (at most `tail_bytes`).
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.buf.len()
    }

    /// The last `tail_bytes` pushed (fewer if fewer were pushed), oldest first.
    pub fn into_tail(mut self) -> Vec<u8> {
        self.buf.rotate_left(self.start);
        self.buf
    }
}
