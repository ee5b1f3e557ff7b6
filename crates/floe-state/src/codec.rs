//! The stable binary encoding of keys and state values.
//!
//! Floe uses postcard: compact (varints), fast, and with a documented wire
//! format that is stable across its 1.x releases, so bytes written by one
//! version of Floe (key hashes, snapshots, savepoints) read the same in the
//! next. Key hashing encodes into a stack buffer, so routing a record costs no
//! allocation for keys up to [`STACK_KEY_BYTES`] bytes.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StateError;

/// Encoded keys up to this size are hashed without touching the heap.
pub const STACK_KEY_BYTES: usize = 64;

/// Encodes a value.
pub fn encode<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<Vec<u8>, StateError> {
    postcard::to_allocvec(value).map_err(|e| StateError::Codec {
        action: "encode",
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// Appends the encoding of a value to `out` (no intermediate buffer).
pub fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
    what: &str,
) -> Result<(), StateError> {
    postcard::serialize_with_flavor(value, AppendVec(out)).map_err(|e| StateError::Codec {
        action: "encode",
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// A postcard output flavor appending to a borrowed `Vec`.
struct AppendVec<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendVec<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let n = data.len();
        if n > 8 {
            self.0.extend_from_slice(data);
            return Ok(());
        }
        // Varints and small fields: one unaligned 8-byte store instead of a
        // libc memcpy call per field (snapshots encode millions of them).
        let mut word = 0u64;
        for (i, b) in data.iter().enumerate() {
            word |= u64::from(*b) << (8 * i);
        }
        self.0.reserve(8);
        let len = self.0.len();
        // SAFETY: `reserve(8)` guarantees 8 bytes of capacity after `len`;
        // the store writes exactly those, and only the `n <= 8` bytes that
        // `data` supplied become part of the vector.
        unsafe {
            let dst = self.0.as_mut_ptr().add(len);
            std::ptr::write_unaligned(dst.cast::<[u8; 8]>(), word.to_le_bytes());
            self.0.set_len(len + n);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Decodes a value, requiring that every byte is consumed.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StateError> {
    let err = |reason: String| StateError::Codec {
        action: "decode",
        what: what.to_string(),
        reason,
    };
    let (v, rest) = postcard::take_from_bytes(bytes).map_err(|e| err(e.to_string()))?;
    if !rest.is_empty() {
        return Err(err(format!("{} trailing bytes", rest.len())));
    }
    Ok(v)
}

/// A postcard output flavor for key hashing: small keys stay in a stack
/// buffer filled byte by byte (no `memcpy` call for a varint), larger ones
/// spill to the heap.
struct KeyBuffer {
    /// `STACK_KEY_BYTES` of key plus 8 bytes of slack for whole-word stores.
    stack: [u8; STACK_KEY_BYTES + 8],
    len: usize,
    heap: Option<Vec<u8>>,
}

impl KeyBuffer {
    #[inline]
    fn bytes(&self) -> &[u8] {
        match &self.heap {
            Some(v) => v,
            None => &self.stack[..self.len],
        }
    }

    #[cold]
    fn spill(&mut self, data: &[u8]) {
        let mut v = Vec::with_capacity((self.len + data.len()) * 2);
        v.extend_from_slice(&self.stack[..self.len]);
        v.extend_from_slice(data);
        self.heap = Some(v);
    }
}

impl postcard::ser_flavors::Flavor for &mut KeyBuffer {
    type Output = ();

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if let Some(v) = &mut self.heap {
            v.extend_from_slice(data);
        } else if data.len() <= 8 && self.len + data.len() <= STACK_KEY_BYTES {
            // Keys are mostly a few bytes (a varint, a short string). Gather
            // them into one word and store 8 bytes at once: a libc memcpy
            // call (which LLVM turns a plain byte loop into) costs more than
            // the copy itself.
            let mut word = 0u64;
            for (i, b) in data.iter().enumerate() {
                word |= u64::from(*b) << (8 * i);
            }
            self.stack[self.len..self.len + 8].copy_from_slice(&word.to_le_bytes());
            self.len += data.len();
        } else if self.len + data.len() <= STACK_KEY_BYTES {
            self.stack[self.len..self.len + data.len()].copy_from_slice(data);
            self.len += data.len();
        } else {
            self.spill(data);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Calls `f` with the canonical (postcard) bytes of `key`, on the stack
/// when they fit.
///
/// # Panics
/// If the key cannot be serialized at all (a `Serialize` impl that fails),
/// which would make key-group assignment impossible.
#[inline]
pub fn with_key_bytes<K: Serialize + ?Sized, R>(key: &K, f: impl FnOnce(&[u8]) -> R) -> R {
    let mut buf = KeyBuffer {
        stack: [0u8; STACK_KEY_BYTES + 8],
        len: 0,
        heap: None,
    };
    if let Err(e) = postcard::serialize_with_flavor(key, &mut buf) {
        panic!("key type must be serializable: {e}");
    }
    f(buf.bytes())
}
