//! Size classes (src/class.rs): boundaries and the internal-waste bound.

use muse_pool::{class_of, PoolError, SizeClass, MAX_CLASS_BYTES, NUM_CLASSES};
use rstest::rstest;

/// The class list written out independently: 2ⁿ·{1, 1.25, 1.5, 1.75}, n ≥ 8.
fn classes_upto(limit: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut octave = 256usize;
    while octave <= limit {
        for quarters in [4, 5, 6, 7] {
            out.push(octave / 4 * quarters);
        }
        octave *= 2;
    }
    out
}

#[rstest]
#[case::one(1, 256)]
#[case::below_min(255, 256)]
#[case::min(256, 256)]
#[case::just_above_min(257, 320)]
#[case::c320(320, 320)]
#[case::c321(321, 384)]
#[case::c384(384, 384)]
#[case::c385(385, 448)]
#[case::c448(448, 448)]
#[case::c449(449, 512)]
#[case::c512(512, 512)]
#[case::c513(513, 640)]
#[case::c1000(1000, 1024)]
#[case::c1025(1025, 1280)]
#[case::c1792(1792, 1792)]
#[case::c1793(1793, 2048)]
#[case::mib(1 << 20, 1 << 20)]
#[case::mib_plus_1((1 << 20) + 1, 1_310_720)]
#[case::mib_75((1 << 20) / 4 * 7, (1 << 20) / 4 * 7)]
#[case::gib_minus_1((1 << 30) - 1, 1 << 30)]
#[case::max(MAX_CLASS_BYTES, MAX_CLASS_BYTES)]
fn class_of_picks_the_smallest_class_not_below(#[case] bytes: usize, #[case] want: usize) {
    let got = class_of(bytes).expect("valid request");
    assert_eq!(got.bytes(), want, "class_of({bytes})");
    assert_eq!(got.stride() % 256, 0);
    assert!(got.stride() >= got.bytes());
}

#[test]
fn class_of_rejects_zero_and_too_large() {
    assert_eq!(class_of(0), Err(PoolError::ZeroSize));
    let err = class_of(MAX_CLASS_BYTES + 1).expect_err("too large");
    assert!(matches!(err, PoolError::TooLarge { .. }));
    assert!(err.to_string().contains("`bytes`"), "{err}");
    assert!(class_of(usize::MAX).is_err());
}

#[test]
fn classes_are_the_quarter_octave_series() {
    let want = classes_upto(1 << 24);
    assert_eq!(
        &want[..10],
        &[256, 320, 384, 448, 512, 640, 768, 896, 1024, 1280]
    );
    for (i, &bytes) in want.iter().enumerate() {
        let c = SizeClass::from_index(i).expect("class");
        assert_eq!(c.bytes(), bytes, "class {i}");
        assert_eq!(c.index(), i);
    }
    assert_eq!(
        SizeClass::from_index(NUM_CLASSES - 1).map(|c| c.bytes()),
        Some(MAX_CLASS_BYTES)
    );
}

/// Checks `class_of(r)` against the independent list and the bound class/r ≤ 1.25,
/// i.e. waste 1 − r/class < 20 % (strict: 5r > 4·class).
fn check_bound(r: usize, list: &[usize]) {
    let c = class_of(r).expect("valid").bytes();
    let want = *list.iter().find(|&&b| b >= r).expect("list long enough");
    assert_eq!(c, want, "class_of({r})");
    assert!(4 * c <= 5 * r, "class {c} > 1.25 × {r}");
    assert!(5 * r > 4 * c, "waste of {r} in {c} is not below 20 %");
}

#[test]
fn waste_is_below_20_percent_for_every_size_to_64_kib() {
    let list = classes_upto(1 << 23);
    for r in 256..=65_536 {
        check_bound(r, &list);
    }
}

#[test]
fn waste_is_below_20_percent_sampled_to_4_mib() {
    let list = classes_upto(1 << 23);
    // A prime step, plus both sides of every class boundary.
    for r in (65_536..=1 << 22).step_by(61) {
        check_bound(r, &list);
    }
    for &b in list.iter().filter(|&&b| b <= 1 << 22) {
        for r in [b - 1, b, b + 1] {
            check_bound(r.max(256), &list);
        }
    }
}

#[test]
fn waste_bound_holds_at_every_class_boundary_to_the_max() {
    for i in 1..NUM_CLASSES {
        let below = SizeClass::from_index(i - 1).expect("class").bytes();
        let r = below + 1; // the worst request of class i
        let c = class_of(r).expect("valid").bytes();
        assert!(
            (c as f64) / (r as f64) <= 1.25 && 1.0 - (r as f64) / (c as f64) < 0.2,
            "class {i}"
        );
    }
}
