//! splitmix64, the one seeded mixer of the workspace: the training batches (`muse-train`) and the
//! gradient tests' uniforms both draw from it.

/// One splitmix64 output for state `z` (Steele, Lea & Flood 2014; the constants of Vigna's
/// reference): a bijection of u64 that decorrelates consecutive states.
///
/// ```
/// // The first output of the reference generator seeded with 0.
/// assert_eq!(muse_reference::splitmix64(0), 0xE220_A839_7B1D_CDAF);
/// ```
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
