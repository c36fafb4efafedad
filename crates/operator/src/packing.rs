//! Values the operator keeps for every resource, packed: compact JSON compressed with LZ4 against a
//! dictionary of a typical value. Most of such a value is field names and words that every value
//! of its type shares, so a packed one takes a tenth of its bytes as Rust values, and at 100,000
//! resources that is the difference between one small replica and several (BENCHMARKS.md, Memory).
//! A value is unpacked when a reconciliation reads it, a few microseconds once per change.

use std::fmt;
use std::marker::PhantomData;

/// A type that packs: how it is written as JSON and read back, and its dictionary.
pub(crate) trait Pack: Sized {
    /// A typical value as [`Pack::to_json`] writes it. Any value packs whatever the dictionary
    /// holds; one that no longer resembles the values only packs less tightly.
    const DICTIONARY: &'static [u8];

    fn to_json(&self) -> Vec<u8>;

    /// Reads what `to_json` wrote.
    fn from_json(json: &[u8]) -> Self;
}

/// A packed `T`. Equal values pack to equal bytes, so packed values compare as the values do.
pub(crate) struct Packed<T> {
    bytes: Box<[u8]>,
    _type: PhantomData<fn() -> T>,
}

impl<T: Pack> Packed<T> {
    pub(crate) fn pack(value: &T) -> Self {
        let json = value.to_json();
        Packed {
            bytes: lz4_flex::block::compress_prepend_size_with_dict(&json, T::DICTIONARY)
                .into_boxed_slice(),
            _type: PhantomData,
        }
    }

    pub(crate) fn unpack(&self) -> T {
        // Fails only if the bytes were not made by `pack`, with this type's dictionary.
        let json = lz4_flex::block::decompress_size_prepended_with_dict(&self.bytes, T::DICTIONARY)
            .expect("a packed value decompresses");
        T::from_json(&json)
    }

    /// The bytes it takes.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }
}

impl<T> Clone for Packed<T> {
    fn clone(&self) -> Self {
        Packed {
            bytes: self.bytes.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> PartialEq for Packed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

/// The length only: a packed value may hold a secret (an instance's password).
impl<T> fmt::Debug for Packed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Packed({} bytes)", self.bytes.len())
    }
}

/// For a test that keeps a dictionary current: a type's typical value as [`Pack::to_json`] writes
/// it now, and the dictionary file `path` (under the crate) holds. When they differ, rewrites the
/// file and fails once, to have the new one committed: a stale dictionary only packs less
/// tightly, which nothing else would notice.
#[cfg(test)]
pub(crate) fn assert_dictionary_current<T: Pack>(typical: &T, path: &str) {
    let current = typical.to_json();
    if current != T::DICTIONARY {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        std::fs::write(&path, &current).expect("rewrite the dictionary");
        panic!(
            "{} was out of date and has been rewritten: commit it",
            path.display()
        );
    }
}
