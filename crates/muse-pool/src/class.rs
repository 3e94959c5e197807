//! Size classes 2ⁿ·{1, 1.25, 1.5, 1.75} from 256 B (design `hyperbolic.md` §10).
//!
//! Class `i` has `(4 + i % 4) · 2^(6 + i / 4)` bytes: 256, 320, 384, 448, 512, 640, 768, 896,
//! 1024, 1280, … For a request `r > 256` in the octave `2ᵉ < r ≤ 2ᵉ⁺¹` the chosen class is
//! `m · 2ᵉ⁻²` with `m = ⌈r / 2ᵉ⁻²⌉ ∈ {5, 6, 7, 8}`, so `class < r · m / (m − 1) ≤ 1.25 · r`: the
//! waste `1 − r / class` stays below 20 %. Tests: `tests/class.rs`.

use crate::error::{PoolError, Result};

/// Alignment of every block and slab address, in bytes (what `cuMemAlloc` guarantees).
pub const ALIGN: usize = 256;

/// The smallest size class, in bytes; smaller requests are served from it.
pub const MIN_CLASS_BYTES: usize = 256;

/// Number of size classes (indices `0..NUM_CLASSES`); the last one has 7·2⁶¹ bytes.
pub const NUM_CLASSES: usize = 224;

/// The largest request [`class_of`] accepts: the last class's size.
pub const MAX_CLASS_BYTES: usize = 7 << 61;

/// A size class: its index and its size in bytes.
///
/// ```
/// use muse_pool::{class_of, SizeClass};
/// let c = class_of(1000)?;
/// assert_eq!((c.index(), c.bytes(), c.stride()), (8, 1024, 1024));
/// assert_eq!(SizeClass::from_index(1).map(|c| c.bytes()), Some(320));
/// // 320 B blocks sit at 256-B-aligned addresses, 512 B apart.
/// assert_eq!(class_of(300)?.stride(), 512);
/// # Ok::<(), muse_pool::PoolError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SizeClass {
    index: u8,
}

impl SizeClass {
    /// The class with this index, or `None` past the last class.
    pub fn from_index(index: usize) -> Option<SizeClass> {
        u8::try_from(index)
            .ok()
            .filter(|&i| usize::from(i) < NUM_CLASSES)
            .map(|index| SizeClass { index })
    }

    /// Index in `0..NUM_CLASSES`, increasing with the size.
    pub fn index(self) -> usize {
        usize::from(self.index)
    }

    /// Size in bytes: `(4 + i % 4) · 2^(6 + i / 4)`.
    pub fn bytes(self) -> usize {
        let i = self.index();
        (4 + i % 4) << (6 + i / 4)
    }

    /// Distance between two blocks of this class in a slab: the size rounded up to [`ALIGN`].
    ///
    /// Equal to [`bytes`](Self::bytes) from 1024 B on; the classes 320, 384, 448, 640 and 896 B
    /// carry padding (counted as idle reserved bytes, not as internal fragmentation).
    pub fn stride(self) -> usize {
        self.bytes().next_multiple_of(ALIGN)
    }
}

/// The smallest size class of at least `bytes` (requests of 1..=256 B get the 256 B class).
///
/// ```
/// use muse_pool::class_of;
/// assert_eq!(class_of(1)?.bytes(), 256);
/// assert_eq!(class_of(257)?.bytes(), 320);
/// assert_eq!(class_of(1 << 20)?.bytes(), 1 << 20);
/// assert!(class_of(0).is_err());
/// # Ok::<(), muse_pool::PoolError>(())
/// ```
pub fn class_of(bytes: usize) -> Result<SizeClass> {
    if bytes == 0 {
        return Err(PoolError::ZeroSize);
    }
    if bytes > MAX_CLASS_BYTES {
        return Err(PoolError::TooLarge {
            bytes,
            max: MAX_CLASS_BYTES,
        });
    }
    if bytes <= MIN_CLASS_BYTES {
        return Ok(SizeClass { index: 0 });
    }
    // 2^e < bytes <= 2^(e+1), e >= 8; quarter-octave step q = 2^(e-2).
    let e = (bytes - 1).ilog2() as usize;
    let m = bytes.div_ceil(1 << (e - 2)); // in 5..=8
    let index = (e - 8) * 4 + (m - 4);
    Ok(SizeClass {
        index: u8::try_from(index).expect("invariant: index < NUM_CLASSES <= 255"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_class_is_the_maximum() {
        let last = SizeClass::from_index(NUM_CLASSES - 1).expect("last class");
        assert_eq!(last.bytes(), MAX_CLASS_BYTES);
        assert_eq!(
            class_of(MAX_CLASS_BYTES).map(|c| c.index()),
            Ok(NUM_CLASSES - 1)
        );
        assert!(SizeClass::from_index(NUM_CLASSES).is_none());
    }

    #[test]
    fn class_of_a_class_size_is_that_class() {
        for i in 0..NUM_CLASSES {
            let c = SizeClass::from_index(i).expect("class");
            assert_eq!(class_of(c.bytes()), Ok(c));
            if i > 0 {
                assert_eq!(class_of(c.bytes() - 1).map(|d| d.index()), Ok(i));
                let below = SizeClass::from_index(i - 1).expect("class");
                assert_eq!(class_of(below.bytes() + 1), Ok(c));
            }
        }
    }
}
