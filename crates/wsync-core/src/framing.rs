//! Framing for every wsync channel (daemon socket, monitor stdin/stdout): one compact JSON value
//! per line, at most [`MAX_FRAME_BYTES`]. "Peer closed" and "undecodable" are different errors.

use std::io::{BufRead, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Longest accepted frame, newline excluded.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the stream cleanly between frames.
    #[error("peer closed the connection")]
    Closed,
    /// The peer closed the stream in the middle of a frame.
    #[error("connection closed in the middle of a message")]
    Truncated,
    #[error("message longer than {MAX_FRAME_BYTES} bytes")]
    TooLarge,
    #[error("undecodable message: {0}")]
    Undecodable(#[source] serde_json::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Encodes `value` as one frame (compact JSON and a newline).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).expect("protocol types always serialize");
    bytes.push(b'\n');
    bytes
}

/// Decodes one frame's bytes (without its newline).
pub fn decode<T: DeserializeOwned>(line: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(line).map_err(FrameError::Undecodable)
}

/// Writes one frame and flushes.
pub fn write_frame<T: Serialize>(writer: &mut impl Write, value: &T) -> Result<(), FrameError> {
    writer.write_all(&encode(value))?;
    writer.flush()?;
    Ok(())
}

/// Reads one frame's raw bytes; blank lines are skipped.
pub fn read_line(reader: &mut impl BufRead) -> Result<Vec<u8>, FrameError> {
    let mut line = Vec::new();
    loop {
        let available = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        match take_until_newline(&mut line, available)? {
            Step::Eof => return end_of_stream(line),
            Step::Consumed { used, complete } => {
                reader.consume(used);
                if complete {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        line.clear();
                        continue;
                    }
                    return Ok(line);
                }
            }
        }
    }
}

/// Reads and decodes one frame.
pub fn read_frame<T: DeserializeOwned>(reader: &mut impl BufRead) -> Result<T, FrameError> {
    decode(&read_line(reader)?)
}

enum Step {
    Eof,
    Consumed { used: usize, complete: bool },
}

fn take_until_newline(line: &mut Vec<u8>, available: &[u8]) -> Result<Step, FrameError> {
    if available.is_empty() {
        return Ok(Step::Eof);
    }
    let (chunk, complete) = match available.iter().position(|b| *b == b'\n') {
        Some(i) => (&available[..i], true),
        None => (available, false),
    };
    if line.len() + chunk.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge);
    }
    line.extend_from_slice(chunk);
    let used = chunk.len() + usize::from(complete);
    Ok(Step::Consumed { used, complete })
}

fn end_of_stream(line: Vec<u8>) -> Result<Vec<u8>, FrameError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        Err(FrameError::Closed)
    } else {
        Err(FrameError::Truncated)
    }
}

/// The same framing over tokio streams.
#[cfg(feature = "tokio")]
pub mod asynchronous {
    use super::*;
    use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

    /// Reads one frame's raw bytes; blank lines are skipped.
    pub async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Vec<u8>, FrameError> {
        let mut line = Vec::new();
        loop {
            let available = reader.fill_buf().await?;
            match take_until_newline(&mut line, available)? {
                Step::Eof => return end_of_stream(line),
                Step::Consumed { used, complete } => {
                    reader.consume(used);
                    if complete {
                        if line.iter().all(u8::is_ascii_whitespace) {
                            line.clear();
                            continue;
                        }
                        return Ok(line);
                    }
                }
            }
        }
    }

    /// Reads and decodes one frame.
    pub async fn read_frame<T: DeserializeOwned, R: AsyncBufRead + Unpin>(
        reader: &mut R,
    ) -> Result<T, FrameError> {
        decode(&read_line(reader).await?)
    }

    /// Writes one frame and flushes.
    pub async fn write_frame<T: Serialize, W: AsyncWrite + Unpin>(
        writer: &mut W,
        value: &T,
    ) -> Result<(), FrameError> {
        writer.write_all(&encode(value)).await?;
        writer.flush().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn reads_frames_and_skips_blank_lines() {
        let mut r = Cursor::new(b"{\"a\":1}\n\n  \n{\"a\":2}\n".to_vec());
        let a: serde_json::Value = read_frame(&mut r).unwrap();
        let b: serde_json::Value = read_frame(&mut r).unwrap();
        assert_eq!((a["a"].as_i64(), b["a"].as_i64()), (Some(1), Some(2)));
        assert!(matches!(
            read_frame::<serde_json::Value>(&mut r),
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn distinguishes_truncated_undecodable_and_too_large() {
        let mut r = Cursor::new(b"{\"a\":".to_vec());
        assert!(matches!(read_line(&mut r), Err(FrameError::Truncated)));
        let mut r = Cursor::new(b"not json\n".to_vec());
        assert!(matches!(
            read_frame::<serde_json::Value>(&mut r),
            Err(FrameError::Undecodable(_))
        ));
        let mut big = vec![b'x'; MAX_FRAME_BYTES + 1];
        big.push(b'\n');
        let mut r = std::io::BufReader::with_capacity(4096, Cursor::new(big));
        assert!(matches!(read_line(&mut r), Err(FrameError::TooLarge)));
    }

    #[test]
    fn a_frame_of_exactly_the_maximum_is_accepted() {
        let mut exact = vec![b' '; MAX_FRAME_BYTES - 2];
        exact.splice(0..0, b"1".iter().copied());
        exact.push(b'\n');
        let mut r = std::io::BufReader::with_capacity(4096, Cursor::new(exact));
        assert!(read_line(&mut r).is_ok());
    }
}
