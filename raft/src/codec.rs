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

/// Decodes a whole buffer; trailing bytes are an error, not silently ignored.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, read) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(CodecError::Decode)?;
    if read != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - read));
    }
    Ok(value)
}

/// Property tests: any bytes decode to a value or an error, never a panic or an
/// allocation the bytes cannot back (a log entry, a snapshot, a peer frame, an outbox
/// record all arrive as bytes that may be torn or hostile). `PROPTEST_CASES` sets how
/// many inputs each tries.
#[cfg(test)]
mod properties {
    use super::*;
    use crate::GovState;
    use proptest::prelude::*;
    use tollgate_proto::peer::Envelope;
    use tollgate_proto::{Charge, Command};

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Command>(&bytes);
            let _ = decode::<Charge>(&bytes);
            let _ = decode::<Envelope>(&bytes);
            let _ = decode::<(u64, GovState)>(&bytes);
        }

        #[test]
        fn a_claimed_length_beyond_the_bytes_fails_without_allocating_it(
            len in 1u64 << 20..1u64 << 29,
            tail in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            // An envelope whose body claims up to half a GiB: refused for lack of bytes.
            let mut bytes = encode(&Envelope { protocol_version: 1, kind: 1, body: Vec::new() })
                .unwrap_or_default();
            bytes.truncate(bytes.len() - 1);
            bytes.push(0xfc);
            bytes.extend_from_slice(&(len as u32).to_le_bytes());
            bytes.extend_from_slice(&tail);
            prop_assert!(decode::<Envelope>(&bytes).is_err());
        }

        #[test]
        fn commands_round_trip(n in any::<u64>(), name in "[ -~]{0,40}") {
            let command = Command::UpdateCustomer { id: format!("cus_{n}").as_str().into(), name };
            let bytes = encode(&command).unwrap_or_default();
            prop_assert_eq!(decode::<Command>(&bytes).ok(), Some(command));
        }
    }
}
