//! A read buffer sized by what the reads need. Thousands of clients may sit idle, so an
//! idle one must not hold the buffer its busiest moment needed: the buffer doubles when a
//! read fills it, halves when reads stay small, and [`ReadBuffer::shrink`] gives back
//! what is over the minimum while the client is between transactions. Reads go into
//! spare capacity (`read_buf`), so nothing is zeroed first.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

pub(crate) struct ReadBuffer {
    buf: Vec<u8>,
    /// The next read's size.
    want: usize,
    min: usize,
    max: usize,
}

impl ReadBuffer {
    /// `min` may be 0: then an unused buffer holds no memory at all.
    pub fn new(min: usize, max: usize) -> Self {
        Self {
            buf: Vec::new(),
            want: min.max(512),
            min,
            max,
        }
    }

    /// One read, replacing the contents: the number of bytes read (0 at end of stream).
    /// The next read's size adapts to it. Cancel-safe, as `read_buf` is.
    pub async fn read_from<R: AsyncRead + Unpin>(&mut self, reader: &mut R) -> io::Result<usize> {
        self.buf.clear();
        if self.buf.capacity() < self.want {
            self.buf.reserve_exact(self.want);
        }
        let n = reader.read_buf(&mut self.buf).await?;
        if n >= self.want {
            self.want = (self.want * 2).min(self.max);
        } else if n < self.want / 8 {
            self.want = (self.want / 2).max(self.min).max(512);
        }
        Ok(n)
    }

    /// What the last read gave.
    pub fn filled(&self) -> &[u8] {
        &self.buf
    }

    /// Gives back memory over the minimum (between transactions).
    pub fn shrink(&mut self) {
        if self.buf.capacity() > self.min {
            self.buf = Vec::with_capacity(self.min);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn grows_on_full_reads_shrinks_on_small_ones_and_between_transactions() {
        let mut buf = ReadBuffer::new(512, 4096);
        let big = vec![7u8; 10_000];
        let mut reader = &big[..];
        assert_eq!(buf.read_from(&mut reader).await.unwrap(), 512);
        assert_eq!(buf.filled().len(), 512);
        assert_eq!(buf.read_from(&mut reader).await.unwrap(), 1024);
        assert_eq!(buf.read_from(&mut reader).await.unwrap(), 2048);
        assert_eq!(buf.read_from(&mut reader).await.unwrap(), 4096);
        assert_eq!(buf.filled(), &big[3584..7680]);
        assert_eq!(
            buf.read_from(&mut reader).await.unwrap(),
            2320,
            "the rest, at most max"
        );
        let mut small = &b"tiny"[..];
        assert_eq!(buf.read_from(&mut small).await.unwrap(), 4);
        assert_eq!(buf.filled(), b"tiny");
        assert_eq!(buf.want, 2048);
        buf.shrink();
        assert!(buf.buf.capacity() <= 512);
        let mut idle = ReadBuffer::new(0, 4096);
        idle.shrink();
        assert_eq!(
            idle.buf.capacity(),
            0,
            "an unused buffer with min 0 holds nothing"
        );
    }
}
