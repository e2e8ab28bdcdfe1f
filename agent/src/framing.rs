//! Line framing for the event stream. HTTP/2 hands the body over in chunks that can end
//! anywhere (mid-line, mid-UTF-8 character, or empty), so partial lines are buffered, and the
//! buffer is bounded: a line longer than the limit ends the stream instead of eating memory.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FramingError {
    #[error(
        "an event line is longer than {max} bytes; the broker sent something that is not an event"
    )]
    LineTooLong { max: usize },
}

/// Splits a byte stream into `\n`-terminated lines of at most `max` bytes.
#[derive(Debug)]
pub struct LineFramer {
    partial: Vec<u8>,
    max: usize,
}

impl LineFramer {
    pub fn new(max: usize) -> Self {
        LineFramer { partial: Vec::new(), max }
    }

    /// Feeds one chunk; returns the lines it completes, without their `\n` (or `\r\n`), skipping
    /// empty ones (keep-alive blank lines).
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<Vec<Vec<u8>>, FramingError> {
        let mut lines = Vec::new();
        while let Some(pos) = chunk.iter().position(|b| *b == b'\n') {
            if self.partial.len() + pos > self.max {
                return Err(self.too_long());
            }
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&chunk[..pos]);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if !line.is_empty() {
                lines.push(line);
            }
            chunk = &chunk[pos + 1..];
        }
        if self.partial.len() + chunk.len() > self.max {
            return Err(self.too_long());
        }
        self.partial.extend_from_slice(chunk);
        Ok(lines)
    }

    /// Bytes of an unfinished line, which the end of the stream would lose.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    fn too_long(&mut self) -> FramingError {
        self.partial = Vec::new();
        FramingError::LineTooLong { max: self.max }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(framer: &mut LineFramer, chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        for c in chunks {
            for line in framer.push(c).unwrap() {
                out.push(String::from_utf8(line).unwrap());
            }
        }
        out
    }

    #[test]
    fn lines_split_across_chunks_at_every_position() {
        let stream = "{\"type\":\"heartbeat\",\"at\":\"x\"}\n{\"a\":\"é\"}\r\n\n{\"b\":1}\n";
        let bytes = stream.as_bytes();
        for cut1 in 0..bytes.len() {
            for cut2 in cut1..bytes.len() {
                let mut f = LineFramer::new(1024);
                let got = feed(&mut f, &[&bytes[..cut1], &[], &bytes[cut1..cut2], &bytes[cut2..]]);
                assert_eq!(
                    got,
                    ["{\"type\":\"heartbeat\",\"at\":\"x\"}", "{\"a\":\"é\"}", "{\"b\":1}"]
                );
                assert_eq!(f.pending(), 0);
            }
        }
    }

    #[test]
    fn one_byte_at_a_time_and_a_trailing_partial_line() {
        let mut f = LineFramer::new(64);
        let chunks: Vec<&[u8]> = b"ab\ncd".chunks(1).collect();
        assert_eq!(feed(&mut f, &chunks), ["ab"]);
        assert_eq!(f.pending(), 2);
    }

    #[test]
    fn long_lines_are_refused_whether_complete_or_partial() {
        let mut f = LineFramer::new(4);
        assert_eq!(feed(&mut f, &[b"abcd\n"]), ["abcd"]);
        assert_eq!(f.push(b"abcde\n"), Err(FramingError::LineTooLong { max: 4 }));
        let mut f = LineFramer::new(4);
        f.push(b"abc").unwrap();
        assert_eq!(f.push(b"de"), Err(FramingError::LineTooLong { max: 4 }));
        let mut f = LineFramer::new(4);
        f.push(b"ab").unwrap();
        assert_eq!(f.push(b"cde\nx"), Err(FramingError::LineTooLong { max: 4 }));
    }
}
