//! The gzip form of a page, made once per rendered page and shared by every scrape that asks
//! for it. A page is sent as `[before its histograms, unpersisted, histograms]` (see
//! [`super::Metrics::scrape_as`]); the middle part is rendered per scrape, so the two large
//! parts are compressed on their own, as raw deflate streams that end on a byte boundary, and
//! each scrape only compresses the few hundred bytes between them. Concatenated deflate
//! streams of which all but the last are sync-flushed (not final) are one valid deflate
//! stream; the gzip trailer's CRC is combined from the parts' CRCs.

use bytes::Bytes;
use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// Level 1 (fastest): on these pages of highly repetitive lines it is within a few percent
/// of level 6's size at a fraction of its time (figures in BENCHMARKS.md).
pub const LEVEL: u32 = 1;

/// A gzip member header: no name, no time, unknown OS (as `flate2` writes it).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

#[derive(Debug, thiserror::Error)]
#[error("gzip: {0}")]
pub struct GzipError(String);

/// A page's two large parts compressed.
#[derive(Debug)]
pub struct Parts {
    /// The gzip header and the part before the histograms, sync-flushed.
    head: Bytes,
    head_crc: Crc,
    /// The histograms, the final deflate block.
    tail: Bytes,
    tail_crc: Crc,
}

impl Parts {
    pub fn new(head: &[u8], tail: &[u8], level: u32) -> Result<Self, GzipError> {
        let mut out = HEADER.to_vec();
        deflate(head, level, FlushCompress::Sync, &mut out)?;
        let mut tail_out = Vec::new();
        deflate(tail, level, FlushCompress::Finish, &mut tail_out)?;
        Ok(Self {
            head: Bytes::from(out),
            head_crc: crc(head),
            tail: Bytes::from(tail_out),
            tail_crc: crc(tail),
        })
    }

    /// The whole gzip body, `unpersisted` between the two parts: chunks to send in order.
    pub fn around(&self, unpersisted: &[u8], level: u32) -> Result<[Bytes; 4], GzipError> {
        let mut middle = Vec::new();
        deflate(unpersisted, level, FlushCompress::Sync, &mut middle)?;
        let mut all = Crc::new();
        all.combine(&self.head_crc);
        all.combine(&crc(unpersisted));
        all.combine(&self.tail_crc);
        let mut trailer = Vec::with_capacity(8);
        trailer.extend_from_slice(&all.sum().to_le_bytes());
        // ISIZE: the length modulo 2^32 (RFC 1952), which `amount` is.
        trailer.extend_from_slice(&all.amount().to_le_bytes());
        Ok([
            self.head.clone(),
            Bytes::from(middle),
            self.tail.clone(),
            Bytes::from(trailer),
        ])
    }

    /// Compressed bytes held (the two shared parts).
    pub fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn crc(data: &[u8]) -> Crc {
    let mut c = Crc::new();
    c.update(data);
    c
}

/// Appends `data` as a raw deflate stream: sync-flushed (ends byte-aligned, not final) or
/// finished.
fn deflate(
    data: &[u8],
    level: u32,
    flush: FlushCompress,
    out: &mut Vec<u8>,
) -> Result<(), GzipError> {
    let finish = matches!(flush, FlushCompress::Finish);
    let mut c = Compress::new(Compression::new(level), false);
    // Text pages compress well over 8×: one growth at most, usually none.
    out.reserve(data.len() / 8 + 64);
    loop {
        let done = usize::try_from(c.total_in()).unwrap_or(usize::MAX);
        let rest = data.get(done..).unwrap_or_default();
        let status = c
            .compress_vec(rest, out, flush)
            .map_err(|e| GzipError(e.to_string()))?;
        let consumed = usize::try_from(c.total_in()).unwrap_or(usize::MAX) >= data.len();
        let room = out.len() < out.capacity();
        match status {
            Status::StreamEnd => return Ok(()),
            _ if !finish && consumed && room => return Ok(()),
            _ if !room => out.reserve(out.capacity() / 2 + 4096),
            Status::Ok => {}
            Status::BufError => return Err(GzipError("no progress".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(chunks: &[Bytes]) -> Vec<u8> {
        let body: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .expect("valid gzip");
        out
    }

    #[test]
    fn parts_and_middle_make_one_valid_gzip() {
        let head: Vec<u8> = (0..50_000)
            .flat_map(|i| format!("a_metric{{n=\"{i}\"}} {i}\n").into_bytes())
            .collect();
        let tail = b"# TYPE h histogram\nh_bucket{le=\"+Inf\"} 3\n".repeat(1000);
        for level in [1, 6] {
            let parts = Parts::new(&head, &tail, level).unwrap();
            for middle in [&b""[..], b"x 1\n", &head[..1000]] {
                let chunks = parts.around(middle, level).unwrap();
                let plain = gunzip(&chunks);
                assert_eq!(plain, [&head[..], middle, &tail[..]].concat());
            }
            assert!(parts.len() * 3 < head.len() + tail.len(), "{}", parts.len());
        }
        // Empty parts too.
        let parts = Parts::new(b"", b"", LEVEL).unwrap();
        assert_eq!(gunzip(&parts.around(b"", LEVEL).unwrap()), b"");
    }
}
