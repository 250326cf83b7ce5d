//! Eight bytes at a time: the word tests that the decoder ([`crate::decode`]), the window
//! writer ([`crate::sink::window_json`]) and the pseudonymizer ([`crate::privacy`]) share (the
//! pseudonymizer's digit flags also give the value of eight digits grid ids are read by,
//! [`crate::grid`]).
//! Each flags a byte by setting its top bit; where a borrow can carry a flag onto a byte above
//! a flagged one, the lowest flag is still exact, and whether any flag is set is exact. And
//! sixteen bytes at a time (`wide`'s `u8x16`: SSE2 on every x86-64, plain code elsewhere), the
//! lane tests the decoder's string search and the pseudonymizer's digit search share, each
//! answering one bit per byte; and the positions of set bits, which both kinds of test give.

// No panic path reachable from input, state or configuration (README "Security").

/// `0x01` in every byte.
pub(crate) const ONE_PER_BYTE: u64 = u64::from_ne_bytes([0x01; 8]);
/// The top bit of every byte.
pub(crate) const TOP_BITS: u64 = u64::from_ne_bytes([0x80; 8]);

/// The eight bytes of `bytes` from `at` as a little-endian word (the first byte lowest), or
/// `None` when fewer than eight are left.
#[inline]
pub(crate) fn word_at(bytes: &[u8], at: usize) -> Option<u64> {
    let eight = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(<[u8; 8]>::try_from(eight).ok()?))
}

/// Flags the bytes of `word` below `limit` (at most `0x80`): subtracting `limit` borrows into
/// a byte's top bit while that bit was clear (the classic `(x − n…) & !x & 0x80…` test).
#[inline]
pub(crate) fn bytes_below(word: u64, limit: u8) -> u64 {
    word.wrapping_sub(ONE_PER_BYTE.wrapping_mul(u64::from(limit))) & !word & TOP_BITS
}

/// Flags the bytes of `word` equal to `byte` (zero after XOR with it).
#[inline]
pub(crate) fn bytes_equal_to(word: u64, byte: u8) -> u64 {
    bytes_below(word ^ ONE_PER_BYTE.wrapping_mul(u64::from(byte)), 1)
}

/// Flags the bytes JSON does not allow plain inside a string: a quote, a backslash or a
/// control character. The writer leaves text with them to serde_json.
#[inline]
pub(crate) fn json_string_specials(word: u64) -> u64 {
    bytes_equal_to(word, b'"') | bytes_equal_to(word, b'\\') | bytes_below(word, 0x20)
}

/// The top bit of each byte of `word` that is an ASCII digit, and no other bit (exact for every
/// byte: a byte with its top bit clear is a digit when adding `0x50` sets its top bit, it is at
/// least `0`, and adding `0x46` does not, it is at most `9`; neither addition can carry into
/// the next byte).
#[inline]
pub(crate) fn digit_flags(word: u64) -> u64 {
    const LOW_SEVEN_BITS: u64 = u64::from_ne_bytes([0x7f; 8]);
    const TO_TOP_BIT_FROM_ZERO: u64 = u64::from_ne_bytes([0x80 - b'0'; 8]);
    const TO_TOP_BIT_PAST_NINE: u64 = u64::from_ne_bytes([0x80 - b'9' - 1; 8]);
    let low_bits = word & LOW_SEVEN_BITS;
    let at_least_zero = low_bits.wrapping_add(TO_TOP_BIT_FROM_ZERO);
    let past_nine = low_bits.wrapping_add(TO_TOP_BIT_PAST_NINE);
    at_least_zero & !past_nine & !word & TOP_BITS
}

/// Marks the lanes of `bytes` holding at most `limit` (unsigned): exactly those equal to their
/// minimum with `limit`.
#[inline]
pub(crate) fn lanes_at_most(bytes: wide::u8x16, limit: u8) -> wide::u8x16 {
    bytes.min(wide::u8x16::splat(limit)).cmp_eq(bytes)
}

/// One bit per marked lane of `lanes` (all ones where marked, zero elsewhere), the first byte
/// lowest.
#[inline]
pub(crate) fn lane_bits(lanes: wide::u8x16) -> u32 {
    u32::from_ne_bytes(lanes.move_mask().to_ne_bytes())
}

/// The positions of the set bits of `bits`, lowest first.
pub(crate) fn set_bit_positions(mut bits: u64) -> impl Iterator<Item = u32> {
    std::iter::from_fn(move || {
        if bits == 0 {
            return None;
        }
        let position = bits.trailing_zeros();
        bits &= bits - 1;
        Some(position)
    })
}

/// The number eight ASCII digits spell (the first byte the most significant digit), or `None`
/// when a byte is not a digit: three multiplications for the eight instead of one per digit
/// (the pair, quad and octet sums of the well-known SWAR parse; no step carries into another
/// byte or half, so every lane stays exact).
#[inline]
pub(crate) fn eight_digits_value(word: u64) -> Option<u64> {
    if digit_flags(word) != TOP_BITS {
        return None;
    }
    let digits = word.wrapping_sub(ONE_PER_BYTE.wrapping_mul(u64::from(b'0')));
    // Byte 2i: ten times digit 2i plus digit 2i + 1.
    let pairs = digits.wrapping_mul(10).wrapping_add(digits >> 8);
    const PAIR_LANES: u64 = 0x0000_00ff_0000_00ff;
    let outer_pairs = (pairs & PAIR_LANES).wrapping_mul(100 + (1_000_000 << 32));
    let inner_pairs = ((pairs >> 16) & PAIR_LANES).wrapping_mul(1 + (10_000 << 32));
    Some(outer_pairs.wrapping_add(inner_pairs) >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Eight digits read as a word spell what they spell digit by digit, and any other
        /// byte among them gives `None`.
        #[test]
        fn eight_digits_read_as_a_word_are_the_number_they_spell(
            word in proptest::prelude::prop_oneof![
                proptest::collection::vec(b'0'..=b'9', 8),
                proptest::collection::vec(
                    proptest::prelude::prop_oneof![
                        b'0'..=b'9',
                        // The bytes either side of the digits, and any other.
                        proptest::prelude::Just(b'/'),
                        proptest::prelude::Just(b':'),
                        proptest::prelude::any::<u8>(),
                    ],
                    8,
                ),
            ]
        ) {
            let by_digit = word.iter().try_fold(0u64, |value, byte| {
                byte.is_ascii_digit().then(|| value * 10 + u64::from(byte - b'0'))
            });
            let word = word_at(&word, 0).unwrap_or_default();
            proptest::prop_assert_eq!(eight_digits_value(word), by_digit);
        }
    }

    proptest::proptest! {
        /// The lowest flag marks the first special byte, and a flag is set exactly when one is
        /// there.
        #[test]
        fn the_lowest_special_flag_is_the_first_special_byte(word in proptest::prelude::any::<[u8; 8]>()) {
            let is_special = |byte: &u8| *byte == b'"' || *byte == b'\\' || *byte < 0x20;
            let flags = json_string_specials(u64::from_le_bytes(word));
            let first = word.iter().position(is_special);
            proptest::prop_assert_eq!(
                (flags != 0).then(|| (flags.trailing_zeros() / 8) as usize),
                first
            );
        }
    }
}
