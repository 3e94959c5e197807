//! Correctly rounded conversion to bf16 (round to nearest, ties to even).
//!
//! `half` 2.7's `bf16::from_f64` misrounds values just above a tie: its software path drops the
//! low 32 mantissa bits of the f64 before it rounds, so the sticky bits are lost
//! (VoidStarKat/half-rs#151). An f32 such as `-1.0507817` (bits `0xbf868004`, 4 units above the
//! tie) went down instead of up, so the CPU reference's bf16 GEMM inputs disagreed with the GPU's
//! (`model_to_bf16`), which rounds correctly. `bf16::from_f32` is correct; an f64 goes there
//! through round-to-odd, which makes the second rounding exact (24 ≥ 8 + 2 bits).

/// The nearest bf16 of `x` (ties to even; ±inf past the range; NaN stays NaN).
///
/// ```
/// use muse_reference::bf16_from_f64;
/// // 0xbf868004 as an f32 lies just above the tie between bf16 0xbf86 and 0xbf87.
/// let x = f64::from(f32::from_bits(0xbf86_8004));
/// assert_eq!(bf16_from_f64(x).to_bits(), 0xbf87);
/// assert_eq!(bf16_from_f64(1.0 + 1.0 / 256.0).to_bits(), 0x3f80); // a tie: to even
/// ```
pub fn bf16_from_f64(x: f64) -> half::bf16 {
    half::bf16::from_f32(f32_round_to_odd(x))
}

/// `x` rounded to f32 toward zero, with the last bit set when that was inexact.
pub(crate) fn f32_round_to_odd(x: f64) -> f32 {
    let y = x as f32;
    if x.is_nan() || f64::from(y) == x {
        return y;
    }
    // `as` rounds to nearest; step back toward zero if that went past x in magnitude (the
    // bit pattern of a nonzero f32 minus one is the next value toward zero, either sign).
    let t = if f64::from(y).abs() > x.abs() {
        f32::from_bits(y.to_bits() - 1)
    } else {
        y
    };
    f32::from_bits(t.to_bits() | 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An independent oracle: the two bf16 neighbours of x and their midpoint, exact in f64.
    fn oracle(x: f64) -> u16 {
        let trunc = (x as f32).to_bits() >> 16; // a bf16 near x (sign included)
        let candidates = [trunc.wrapping_sub(1), trunc, trunc + 1, trunc + 2];
        let value = |b: u32| f64::from(f32::from_bits(b << 16));
        let best = candidates
            .iter()
            .copied()
            .filter(|&b| value(b).is_finite() && (b >> 15) == (trunc >> 15))
            .min_by(|&a, &b| {
                let (da, db) = ((value(a) - x).abs(), (value(b) - x).abs());
                da.partial_cmp(&db).unwrap().then((a & 1).cmp(&(b & 1)))
            })
            .unwrap();
        best as u16
    }

    #[test]
    fn just_above_and_at_ties() {
        for bits in [
            0xbf86_8004u32,
            0x3f80_8001,
            0x3f80_8000,
            0x3f81_8000,
            0x4049_0fdb,
        ] {
            let x = f64::from(f32::from_bits(bits));
            assert_eq!(bf16_from_f64(x).to_bits(), oracle(x), "{bits:#x}");
        }
        // An f64 a hair above an f32 that is itself a bf16 tie.
        let tie = f64::from(f32::from_bits(0x3f80_8000));
        let above = f64::from_bits(tie.to_bits() + 1);
        assert_eq!(bf16_from_f64(above).to_bits(), 0x3f81);
        assert_eq!(bf16_from_f64(tie).to_bits(), 0x3f80);
        assert!(bf16_from_f64(f64::NAN).is_nan());
        assert_eq!(bf16_from_f64(1e300).to_bits(), 0x7f80);
    }

    proptest! {
        #[test]
        fn matches_the_neighbour_oracle(neg in any::<bool>(), e in -120i64..127, m in any::<u64>()) {
            let bits = (u64::from(neg) << 63) | (((e + 1023) as u64) << 52) | (m >> 12);
            let x = f64::from_bits(bits);
            prop_assert_eq!(bf16_from_f64(x).to_bits(), oracle(x));
        }

        #[test]
        fn near_ties_match_the_neighbour_oracle(
            hi in 0x0100u32..0x7f00, low in 0x7ffeu32..0x8003, steps in -3i64..4
        ) {
            // Within a few f64 ulps of an f32 at or next to a bf16 midpoint.
            let t = f64::from(f32::from_bits((hi << 16) | low));
            let x = f64::from_bits((t.to_bits() as i64 + steps) as u64);
            prop_assert_eq!(bf16_from_f64(x).to_bits(), oracle(x));
            prop_assert_eq!(bf16_from_f64(-x).to_bits(), oracle(-x));
        }

        #[test]
        fn every_f32_rounds_as_the_gpu_does(bits in any::<u32>()) {
            let x = f32::from_bits(bits);
            prop_assume!(x.is_finite() && x.abs() < 3.0e38);
            // The bit trick of model_to_bf16 (model.cu).
            let gpu = ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16;
            prop_assert_eq!(bf16_from_f64(f64::from(x)).to_bits(), gpu);
        }
    }
}
