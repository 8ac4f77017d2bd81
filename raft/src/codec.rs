//! The one place bytes are made: bincode 2 (serde mode) with a size limit, for log
//! entries, snapshots and peer messages.

use serde::{de::DeserializeOwned, Serialize};

/// Largest message or snapshot the codec will decode; a corrupt length prefix must not
/// make a node allocate without bound.
pub const MAX_DECODE_BYTES: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encode failed")]
    Encode(#[source] bincode::error::EncodeError),
    #[error("decode failed")]
    Decode(#[source] bincode::error::DecodeError),
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODE_BYTES>()
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(CodecError::Encode)
}

/// Decodes a value from the front of `bytes`, borrowing its text from them; gives how
/// many bytes it took.
pub fn decode_front<'de, T: serde::Deserialize<'de>>(
    bytes: &'de [u8],
) -> Result<(T, usize), CodecError> {
    bincode::serde::borrow_decode_from_slice(bytes, config()).map_err(CodecError::Decode)
}

/// Decodes a whole buffer into a value that borrows its text from it.
pub fn decode_borrowed<'de, T: serde::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, CodecError> {
    let (value, read) = decode_front(bytes)?;
    if read != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - read));
    }
    Ok(value)
}

/// Encodes `value` at the end of `buf` (fields one after another, as a struct's are).
pub fn encode_append<T: Serialize>(value: &T, buf: &mut Vec<u8>) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, buf, config())
        .map(|_| ())
        .map_err(CodecError::Encode)
}

/// Decodes a whole buffer; trailing bytes are an error, not silently ignored.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, read) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(CodecError::Decode)?;
    if read != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - read));
    }
    Ok(value)
}
