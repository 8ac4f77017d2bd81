//! Frames on a peer stream: a 4-byte big-endian length, then that many bytes (one
//! encoded `Envelope`). One frame each way per stream.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame a node sends or reads: 64 MiB. A Raft snapshot or a large batch of log
/// entries must fit (the Raft network chunks anything larger), while a corrupt or hostile
/// length prefix can make a node allocate at most this much per stream, and the
/// per-connection stream limit bounds how many such buffers exist at once.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is larger than the {max} bytes allowed")]
    TooLarge { len: u64, max: u64 },
    #[error("stream ended inside a frame")]
    Truncated,
    #[error("stream failed")]
    Io(#[source] std::io::Error),
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(e)
        }
    }
}

/// Writes one frame. A payload over `max` is refused before anything is written.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    payload: &[u8],
    max: usize,
) -> Result<(), FrameError> {
    check_len(payload.len() as u64, max)?;
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge {
        len: payload.len() as u64,
        max: u32::MAX as u64,
    })?;
    writer.write_all(&len.to_be_bytes()).await?;
    writer.write_all(payload).await?;
    Ok(())
}

/// Reads one frame. A length over `max` is refused before its bytes are read or any
/// buffer is allocated for them.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
    reader.read_exact(&mut prefix).await?;
    let len = u32::from_be_bytes(prefix) as u64;
    check_len(len, max)?;
    // `len <= max <= usize::MAX` after the check.
    let mut payload = vec![0u8; len as usize];
    reader.read_exact(&mut payload).await?;
    Ok(payload)
}

fn check_len(len: u64, max: usize) -> Result<(), FrameError> {
    if len > max as u64 {
        return Err(FrameError::TooLarge {
            len,
            max: max as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_limits_hold() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        for payload in [&b""[..], b"x", &[7u8; 1000][..]] {
            write_frame(&mut a, payload, 1000).await.unwrap();
            assert_eq!(read_frame(&mut b, 1000).await.unwrap(), payload);
        }
        // The writer refuses an oversized payload without writing.
        assert!(matches!(
            write_frame(&mut a, &[0u8; 1001], 1000).await,
            Err(FrameError::TooLarge {
                len: 1001,
                max: 1000
            })
        ));
        // The reader refuses an oversized length prefix without reading on.
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        assert!(matches!(
            read_frame(&mut b, 1000).await,
            Err(FrameError::TooLarge { max: 1000, .. })
        ));
        // A stream that ends inside a frame is truncated, not a short frame.
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&10u32.to_be_bytes()).await.unwrap();
        a.write_all(b"abc").await.unwrap();
        drop(a);
        assert!(matches!(
            read_frame(&mut b, 1000).await,
            Err(FrameError::Truncated)
        ));
    }
}
