//! Reading the agent's answer: one line, bounded, into buffers that are zeroized when dropped
//! (the answer carries secret values, and a `Vec` that grows leaves unzeroized copies behind).
//! Writing lines is [`maestro_wire::jsonline`], shared with the agent.

use std::io::{self, BufRead, Read};

use maestro_wire::jsonline::extend_zeroizing;
use thiserror::Error;
use zeroize::Zeroizing;

#[derive(Debug, Error)]
pub enum LineError {
    #[error("the message is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("the connection closed before a whole message arrived")]
    Truncated,
    #[error("reading the message failed: {0}")]
    Read(#[source] io::Error),
}

/// The first capacity of a line buffer: most answers (the variables of a few dozen secrets)
/// fit. A buffer starts small because dropping it zeroizes its whole capacity, byte by byte:
/// a 256 KiB start cost `maestro-exec` about a millisecond on every run (page faults, the wipe
/// and the unmap), more than everything else it does.
const FIRST_LINE_CAPACITY: usize = 8 * 1024;

/// Reads one line of at most `max` bytes (without its `\n`) into a zeroizing buffer that grows
/// by doubling (each old buffer is zeroized as it is replaced); every byte read passes through
/// it only.
pub fn read_line<R: BufRead>(reader: &mut R, max: usize) -> Result<Zeroizing<Vec<u8>>, LineError> {
    let mut line = Zeroizing::new(Vec::with_capacity(max.min(FIRST_LINE_CAPACITY) + 1));
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(LineError::Read(e)),
        };
        if available.is_empty() {
            return Err(LineError::Truncated);
        }
        let (take, done) = match available.iter().position(|b| *b == b'\n') {
            Some(pos) => (pos, true),
            None => (available.len(), false),
        };
        if line.len() + take > max {
            return Err(LineError::TooLong { max });
        }
        extend_zeroizing(&mut line, &available[..take]);
        reader.consume(if done { take + 1 } else { take });
        if done {
            return Ok(line);
        }
    }
}

/// A reader's bytes through [`read_line`] with a plain `Read`, for callers without a `BufRead`.
pub fn read_line_from<R: Read>(reader: R, max: usize) -> Result<Zeroizing<Vec<u8>>, LineError> {
    let mut buffered = io::BufReader::with_capacity(64 * 1024, reader);
    read_line(&mut buffered, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_line_and_enforces_the_limit() {
        let mut r = io::Cursor::new(b"hello\nrest".to_vec());
        assert_eq!(&read_line(&mut r, 5).unwrap()[..], b"hello");
        let mut r = io::Cursor::new(b"hello!\n".to_vec());
        assert!(matches!(read_line(&mut r, 5), Err(LineError::TooLong { max: 5 })));
        let mut r = io::Cursor::new(b"no newline".to_vec());
        assert!(matches!(read_line(&mut r, 50), Err(LineError::Truncated)));
        // Across small reader buffers and growth.
        let long = format!("{}\n", "x".repeat(300_000));
        let r = io::BufReader::with_capacity(7, io::Cursor::new(long.into_bytes()));
        assert_eq!(read_line_from(r, 1 << 20).unwrap().len(), 300_000);
    }
}
