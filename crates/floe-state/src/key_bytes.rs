//! The stack buffer that key hashing encodes keys into: routing a record
//! costs no allocation for keys up to [`STACK_KEY_BYTES`] bytes. A leaf
//! module (no state types, no errors), so key-group assignment depends on
//! nothing else in the crate.

use serde::Serialize;

/// Encoded keys up to this size are hashed without touching the heap.
pub const STACK_KEY_BYTES: usize = 64;

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
