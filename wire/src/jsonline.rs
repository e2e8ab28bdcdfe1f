//! One JSON object per line, in buffers that are zeroized when dropped: socket messages can
//! carry secret values, and a `Vec` that grows leaves unzeroized copies behind, so the size is
//! measured first and the buffer allocated once. Shared by the agent (answers, event bodies)
//! and `maestro-exec` (requests, the AWS helper's answer); reading lines is each side's own
//! business (the agent's is async, `maestro-exec`'s blocking).

use std::io::{self, Write};

use serde::Serialize;
use zeroize::Zeroizing;

/// Counts what would be written.
struct Counter(usize);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `value` as one JSON line (with its `\n`) in a zeroizing buffer that never reallocated.
pub fn to_line<T: Serialize>(value: &T) -> Result<Zeroizing<Vec<u8>>, serde_json::Error> {
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(counter.0 + 1));
    serde_json::to_writer(&mut *buf, value)?;
    buf.push(b'\n');
    Ok(buf)
}

/// Appends `data` to `buf`. When `buf` must grow, its content moves to a new allocation twice
/// the size and the old one is zeroized as it is dropped, instead of `Vec`'s realloc leaving an
/// unwiped copy behind.
pub fn extend_zeroizing(buf: &mut Zeroizing<Vec<u8>>, data: &[u8]) {
    let needed = buf.len() + data.len();
    if needed > buf.capacity() {
        let mut bigger = Zeroizing::new(Vec::with_capacity(needed.max(buf.capacity() * 2)));
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
    buf.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_exactly_one_line_without_reallocating() {
        let line = to_line(&serde_json::json!({"a": "b\nc"})).unwrap();
        assert_eq!(&line[..], b"{\"a\":\"b\\nc\"}\n");
        assert_eq!(line.capacity(), line.len());
    }

    #[test]
    fn growing_moves_to_a_new_buffer_at_least_twice_as_big() {
        let mut buf = Zeroizing::new(Vec::with_capacity(4));
        extend_zeroizing(&mut buf, b"abc");
        assert_eq!(buf.capacity(), 4);
        extend_zeroizing(&mut buf, b"de");
        assert_eq!(&buf[..], b"abcde");
        assert!(buf.capacity() >= 8);
    }
}
