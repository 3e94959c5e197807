//! Arithmetic shared by the quantised kernel families (`kv4`, `hyp_int8`, `w4a8`): round half to
//! even, correctly rounded fp16 storage of scales, and 4-bit packing with the even index in the
//! low nibble (design hyperbolic.md §4.1, §8).
//!
//! ```
//! use muse_reference::quant::{pack_nibbles, rint, unpack_nibbles};
//! assert_eq!((rint(2.5), rint(3.5), rint(-2.5)), (2.0, 4.0, -2.0));
//! let packed = pack_nibbles(&[1, 2, 15, 0]).unwrap();
//! assert_eq!(packed, vec![0x21, 0x0f]);
//! assert_eq!(unpack_nibbles(&packed), vec![1, 2, 15, 0]);
//! ```

use half::f16;

use crate::{Error, Result};

/// Round half to even (numpy's `rint`, CUDA's `rintf`): the codecs' one rounding rule.
pub fn rint(x: f64) -> f64 {
    x.round_ties_even()
}

/// The nearest fp16 of `x` (ties to even, subnormals kept, ±inf past 65504), correctly rounded.
///
/// `half`'s `f16::from_f64` rounds twice (the bf16 twin of this defect is VoidStarKat/half-rs#151):
/// 54575.99869715843, just below the tie 54576 between 54560 and 54592, becomes 54592 (measured:
/// 1 in 2·10⁶ random f64 values). Here an f64 goes to f32 by round-to-odd first, which makes the
/// second rounding exact (24 ≥ 11 + 2 bits).
///
/// ```
/// use muse_reference::quant::f16_from_f64;
/// assert_eq!(f16_from_f64(1.0 + 1.0 / 2048.0).to_bits(), 0x3c00); // a tie: to even
/// assert_eq!(f16_from_f64(1.0 + 1.0 / 2048.0 + 1e-12).to_bits(), 0x3c01); // just above it
/// assert_eq!(f16_from_f64(1e-8).to_bits(), 0); // under half the smallest subnormal
/// ```
pub fn f16_from_f64(x: f64) -> f16 {
    f16::from_f32(crate::bf16::f32_round_to_odd(x))
}

/// `x` stored as fp16 and read back: the value a kernel sees for an fp16 scale or offset.
pub fn f16_round(x: f64) -> f64 {
    f64::from(f16_from_f64(x))
}

/// Packs 4-bit codes two to a byte: byte i = `q[2i] | q[2i+1] << 4` (the original's order). Only the
/// low nibble of each code is kept, so signed codes pack as two's complement.
///
/// Fails if `codes` has odd length.
pub fn pack_nibbles(codes: &[u8]) -> Result<Vec<u8>> {
    if codes.len() % 2 != 0 {
        return Err(Error::Domain {
            op: "pack_nibbles",
            arg: "codes",
            rule: format!("must have even length (D even), got {}", codes.len()),
        });
    }
    Ok(codes
        .chunks_exact(2)
        .map(|p| (p[0] & 0x0f) | (p[1] & 0x0f) << 4)
        .collect())
}

/// The inverse of [`pack_nibbles`]: two unsigned codes 0..=15 per byte, low nibble first.
pub fn unpack_nibbles(packed: &[u8]) -> Vec<u8> {
    packed.iter().flat_map(|&b| [b & 0x0f, b >> 4]).collect()
}

/// A 4-bit two's-complement nibble (0..=15) read as a signed code −8..=7.
///
/// ```
/// use muse_reference::quant::signed_nibble;
/// assert_eq!((signed_nibble(0x7), signed_nibble(0x8), signed_nibble(0xf)), (7, -8, -1));
/// ```
pub fn signed_nibble(n: u8) -> i8 {
    ((n << 4) as i8) >> 4
}

/// Fails unless every value is finite, naming the op, the argument and the first bad index.
pub fn check_finite_slice(op: &'static str, arg: &'static str, x: &[f64]) -> Result<()> {
    match x.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::NonFinite {
            op,
            arg,
            index: vec![i],
            value: x[i],
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The nearest fp16 by brute force over its neighbours, exact in f64 (ties to the even code).
    fn oracle_f16(x: f64) -> u16 {
        let guess = f16::from_f32(x as f32).to_bits();
        let sign = guess & 0x8000;
        let cands = [guess.wrapping_sub(1), guess, guess.wrapping_add(1)];
        cands
            .into_iter()
            .filter(|b| b & 0x8000 == sign && f16::from_bits(*b).is_finite())
            .min_by(|&a, &b| {
                let da = (f64::from(f16::from_bits(a)) - x).abs();
                let db = (f64::from(f16::from_bits(b)) - x).abs();
                da.partial_cmp(&db).unwrap().then((a & 1).cmp(&(b & 1)))
            })
            .unwrap()
    }

    proptest! {
        #[test]
        fn f16_is_correctly_rounded(bits in 0u64..0x40ef_fe00_0000_0000u64) {
            // every non-negative f64 below 65520 (the first value that rounds to inf): normal, subnormal and tie regions
            let x = f64::from_bits(bits);
            prop_assert_eq!(f16_from_f64(x).to_bits(), oracle_f16(x), "x = {:e}", x);
            prop_assert_eq!(f16_from_f64(-x).to_bits(), oracle_f16(-x), "x = {:e}", -x);
        }

        #[test]
        fn nibbles_round_trip(codes in proptest::collection::vec(0u8..16, 0..64usize)) {
            let even = &codes[..codes.len() / 2 * 2];
            prop_assert_eq!(unpack_nibbles(&pack_nibbles(even).unwrap()), even.to_vec());
        }
    }

    #[test]
    fn f16_ties_subnormals_and_overflow() {
        // 2⁻²⁵ is half the smallest subnormal: a tie to even (0); a hair above rounds up.
        assert_eq!(f16_from_f64(2f64.powi(-25)).to_bits(), 0);
        assert_eq!(f16_from_f64(2f64.powi(-25) * (1.0 + 1e-15)).to_bits(), 1);
        // 1.5·2⁻²⁴ lies between subnormals 1 and 2: a tie to even (2).
        assert_eq!(f16_from_f64(1.5 * 2f64.powi(-24)).to_bits(), 2);
        assert_eq!(f16_from_f64(65504.0).to_bits(), 0x7bff);
        assert_eq!(f16_from_f64(65520.0).to_bits(), 0x7c00); // the tie above the max: inf
        assert_eq!(f16_from_f64(65519.99).to_bits(), 0x7bff);
        // The value `half::f16::from_f64` double-rounds up: just below the tie 54576.
        assert_eq!(f64::from(f16_from_f64(54575.99869715843)), 54560.0);
        // A value just above a tie whose low f64 bits the software path would drop.
        let tie = 1.0_f64 + 1.0 / 2048.0;
        assert_eq!(
            f16_from_f64(f64::from_bits(tie.to_bits() + 1)).to_bits(),
            0x3c01
        );
    }

    #[test]
    fn every_nibble_at_both_positions() {
        for lo in 0u8..16 {
            for hi in 0u8..16 {
                let b = pack_nibbles(&[lo, hi]).unwrap()[0];
                assert_eq!(b, lo + 16 * hi);
                assert_eq!(unpack_nibbles(&[b]), vec![lo, hi]);
            }
        }
        let signed: Vec<i8> = (0u8..16).map(signed_nibble).collect();
        assert_eq!(
            signed,
            vec![0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1]
        );
        assert!(pack_nibbles(&[1, 2, 3]).is_err());
    }
}
