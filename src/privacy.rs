//! Personal data: which attribute keys and which value shapes are personal (phone numbers,
//! resident ID-card numbers), and the keyed pseudonyms that replace them before a decoded
//! event, or the bytes of an undecodable record, reach any output.
//!
//! Two rules, applied together:
//! - **by key**: an attribute whose key matches the configured list (`phone`, `tel`, `电话`,
//!   `联系电话`…) is replaced whole by a pseudonym, whatever its value looks like;
//! - **by shape**: anywhere else (every attribute key and value, free text, `event_id`,
//!   `device_id`, `source`, `grid_id`, `community_id`, and undecodable bytes), every run that
//!   looks like a mainland mobile number (with or without `+86`/`0086`, with `-` or space
//!   separators), a landline with its area code, or an 18-digit ID-card number is replaced by
//!   the pseudonym of its digits. Runs are bounded by non-digits, so 14-digit grid ids and
//!   20-digit device ids are left alone.
//!
//! A pseudonym is `pseudo:<key id>:<32 letters>`: the first 128 bits of HMAC-SHA-256 over the
//! normalized number, one letter `a`–`p` per nibble. Letters only, so a genuine pseudonym can
//! never contain a digit run that looks like a phone or ID number, and a value that is
//! *exactly* a pseudonym can be kept as is (a replayed dead letter keeps its pseudonyms);
//! anything else that merely starts with `pseudo:` is scrubbed like any other text. The key id
//! lets keys rotate: pseudonyms of different keys never collide silently.

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use regex::bytes::Regex;
use sha2::Sha256;

use crate::byte_words;
use crate::proto::IncidentEvent;

/// Prefix of every pseudonym.
pub const PSEUDONYM_PREFIX: &str = "pseudo:";

/// Letters after the key id: 32 nibbles, 128 bits.
pub const PSEUDONYM_LETTERS: usize = 32;

/// Attribute keys treated as personal by default (matched as described in
/// [`key_matches`]).
pub const DEFAULT_PII_ATTRIBUTE_KEYS: [&str; 14] = [
    "phone",
    "mobile",
    "tel",
    "telephone",
    "msisdn",
    "contact",
    "id_card",
    "电话",
    "手机",
    "联系方式",
    "联系电话",
    "号码",
    "身份证",
    "证件",
];

/// Phone and ID-card shapes; `pii` is the personal run, the group before it a non-digit or
/// the start (Rust's regex has no look-behind; the end is checked by hand).
const PII_VALUE_PATTERN: &str = concat!(
    r"(?:^|[^0-9])(?P<pii>",
    // 18-digit resident ID card: region, birth date, sequence, check digit (or X).
    r"[1-9][0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx]",
    // Mainland mobile with country code: +86, 0086 or a bare 86.
    r"|(?:\+|00)?86[ -]?1[3-9][0-9][ -]?[0-9]{4}[ -]?[0-9]{4}",
    // Mainland mobile: 138 0013 8000, 138-0013-8000, 13800138000.
    r"|1[3-9][0-9][ -]?[0-9]{4}[ -]?[0-9]{4}",
    // Landline with country code (area code without its 0).
    r"|(?:\+|00)86[ -]?[1-9][0-9]{1,2}[ -]?[0-9]{3,4}[ -]?[0-9]{4}",
    // Landline with area code: 010-12345678, 0371 1234 5678, 01012345678.
    r"|0[1-9][0-9]{1,2}[ -]?[0-9]{3,4}[ -]?[0-9]{4}",
    r")",
);

/// The key id written when the configured one is invalid (only reachable when configuration
/// validation was bypassed): visibly wrong, and still unable to look like a number.
pub const INVALID_KEY_ID_STAND_IN: &str = "invalid";

/// Whether `key_id` is a valid key id: short, lowercase, starting with a letter, so that it
/// can never itself look like a phone number.
pub fn is_valid_key_id(key_id: &str) -> bool {
    let mut characters = key_id.chars();
    let starts_with_letter = characters
        .next()
        .is_some_and(|first| first.is_ascii_lowercase());
    starts_with_letter
        && key_id.len() <= 8
        && characters.all(|each| each.is_ascii_lowercase() || each.is_ascii_digit())
}

/// What the pseudonymizer needs: the key, its id and the personal attribute keys.
#[derive(Clone)]
pub struct PrivacySettings {
    /// HMAC key.
    pub key: Vec<u8>,
    /// Key id written into every pseudonym (`k1`).
    pub key_id: String,
    /// Attribute keys whose values are personal whatever they look like.
    pub pii_attribute_keys: Vec<String>,
}

impl std::fmt::Debug for PrivacySettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PrivacySettings")
            .field("key", &"***")
            .field("key_id", &self.key_id)
            .field("pii_attribute_keys", &self.pii_attribute_keys)
            .finish()
    }
}

/// Replaces personal data with keyed pseudonyms.
#[derive(Clone)]
pub struct Pseudonymizer {
    /// HMAC state keyed once, cloned per value.
    mac: Hmac<Sha256>,
    /// `pseudo:<key id>:`.
    prefix: String,
    /// Lowercased personal attribute keys.
    pii_attribute_keys: Vec<String>,
    /// The value shapes; `None` only if the constant pattern failed to compile (a unit test
    /// proves it does not), in which case every digit is masked rather than risking a leak.
    pii_values: Option<Regex>,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Pseudonymizer")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Pseudonymizer {
    /// A pseudonymizer for `settings`. Infallible so that every pipeline constructor stays
    /// so: `Config::validate` refuses an empty key or an invalid key id, and a key id that
    /// slipped past validation is written as [`INVALID_KEY_ID_STAND_IN`].
    pub fn new(settings: &PrivacySettings) -> Pseudonymizer {
        let key_id = if is_valid_key_id(&settings.key_id) {
            settings.key_id.as_str()
        } else {
            INVALID_KEY_ID_STAND_IN
        };
        // HMAC accepts keys of any length, the empty one included.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&settings.key)
            .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
        Pseudonymizer {
            mac,
            prefix: format!("{PSEUDONYM_PREFIX}{key_id}:"),
            pii_attribute_keys: settings
                .pii_attribute_keys
                .iter()
                .map(|key| key.to_lowercase())
                .collect(),
            pii_values: Regex::new(PII_VALUE_PATTERN).ok(),
        }
    }

    /// Pseudonymizes every personal value of `event` in place (see the module doc). Idempotent.
    pub fn pseudonymize_event(&self, event: &mut IncidentEvent) {
        for field in [
            &mut event.event_id,
            &mut event.source,
            &mut event.device_id,
            &mut event.community_id,
            &mut event.grid_id,
        ] {
            self.scrub_in_place(field);
        }
        // In place: the hot path (no personal data) allocates nothing.
        let mut keys_to_scrub = Vec::new();
        for (key, value) in event.attributes.iter_mut() {
            if self.is_pii_attribute_key(key) {
                if !value.is_empty() && !Pseudonymizer::is_pseudonym(value) {
                    *value = self.pseudonymize_whole(value);
                }
            } else {
                self.scrub_in_place(value);
            }
            if let Cow::Owned(scrubbed_key) = self.scrub_text(key) {
                keys_to_scrub.push((key.clone(), scrubbed_key));
            }
        }
        for (key, scrubbed_key) in keys_to_scrub {
            if let Some(value) = event.attributes.remove(&key) {
                event.attributes.insert(scrubbed_key, value);
            }
        }
    }

    /// `text` with every phone or ID-card number replaced by its pseudonym.
    pub fn scrub_text<'text>(&self, text: &'text str) -> Cow<'text, str> {
        match self.scrub_bytes(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            // Only ASCII digit runs were replaced by ASCII text, so the bytes stay UTF-8.
            Cow::Owned(bytes) => Cow::Owned(match String::from_utf8(bytes) {
                Ok(scrubbed) => scrubbed,
                Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
            }),
        }
    }

    /// `bytes` (possibly not UTF-8: a broken record) with every phone or ID-card number
    /// replaced by its pseudonym.
    pub fn scrub_bytes<'bytes>(&self, bytes: &'bytes [u8]) -> Cow<'bytes, [u8]> {
        if self.holds_no_personal_number(bytes) {
            return Cow::Borrowed(bytes);
        }
        let Some(pattern) = &self.pii_values else {
            return mask_every_digit(bytes);
        };
        self.scan_and_scrub(pattern, bytes)
    }

    /// Whether `bytes` is settled as holding no number without the scan: only with the
    /// pattern (without it every digit is masked), and only when
    /// [`cannot_hold_a_personal_number`] says so.
    fn holds_no_personal_number(&self, bytes: &[u8]) -> bool {
        self.pii_values.is_some() && cannot_hold_a_personal_number(bytes)
    }

    /// [`Pseudonymizer::scrub_bytes`] by the regex alone.
    fn scan_and_scrub<'bytes>(&self, pattern: &Regex, bytes: &'bytes [u8]) -> Cow<'bytes, [u8]> {
        // Most fields hold no number of these shapes; `is_match` answers that without
        // resolving capture groups.
        if !pattern.is_match(bytes) {
            return Cow::Borrowed(bytes);
        }
        let mut scrubbed: Option<Vec<u8>> = None;
        let mut copied_until = 0;
        for captures in pattern.captures_iter(bytes) {
            let Some(personal) = captures.name("pii") else {
                continue;
            };
            let followed_by_digit = bytes
                .get(personal.end())
                .is_some_and(|next| next.is_ascii_digit());
            if followed_by_digit {
                continue;
            }
            let output = scrubbed.get_or_insert_with(|| Vec::with_capacity(bytes.len() + 32));
            output.extend_from_slice(bytes.get(copied_until..personal.start()).unwrap_or(&[]));
            let identity = normalized_number(personal.as_bytes());
            output.extend_from_slice(self.pseudonym(identity.as_bytes()).as_bytes());
            copied_until = personal.end();
        }
        let Some(mut output) = scrubbed else {
            return Cow::Borrowed(bytes);
        };
        output.extend_from_slice(bytes.get(copied_until..).unwrap_or(&[]));
        Cow::Owned(output)
    }

    /// Whether `key` names a personal attribute: a configured ASCII entry of up to three
    /// characters (`tel`) must be a whole token of the key (split at anything but letters and
    /// digits), so that `hotel` or `satellite` are not phones; other entries match anywhere in
    /// the key, case-insensitively (`victim_mobile`, `cellphone`, `手机号`, `紧急联系电话`).
    pub fn is_pii_attribute_key(&self, key: &str) -> bool {
        let lowercase_key = key.to_lowercase();
        self.pii_attribute_keys
            .iter()
            .any(|entry| key_matches(&lowercase_key, entry))
    }

    /// Whether `value` is exactly a pseudonym of some key: kept as is on re-injection.
    pub fn is_pseudonym(value: &str) -> bool {
        let Some(rest) = value.strip_prefix(PSEUDONYM_PREFIX) else {
            return false;
        };
        let Some((key_id, letters)) = rest.split_once(':') else {
            return false;
        };
        is_valid_key_id(key_id)
            && letters.len() == PSEUDONYM_LETTERS
            && letters
                .bytes()
                .all(|letter| (b'a'..=b'p').contains(&letter))
    }

    /// The pseudonym of a personal attribute's whole value: kept when it already is one,
    /// empty stays empty, else the pseudonym of its normalized digits (or of the whole text
    /// when it has none).
    fn pseudonymize_whole(&self, value: &str) -> String {
        if value.is_empty() || Pseudonymizer::is_pseudonym(value) {
            return value.to_string();
        }
        let identity = normalized_number(value.as_bytes());
        if identity.is_empty() {
            return self.pseudonym(value.as_bytes());
        }
        self.pseudonym(identity.as_bytes())
    }

    fn scrub_in_place(&self, field: &mut String) {
        // Most ids hold no number: settled here, before the calls and the `Cow`s of the
        // general path (five ids an event; an id that may hold one is checked again there).
        if self.holds_no_personal_number(field.as_bytes()) {
            return;
        }
        if let Cow::Owned(scrubbed) = self.scrub_text(field) {
            *field = scrubbed;
        }
    }

    /// `pseudo:<key id>:` and 128 bits of HMAC-SHA-256, one letter `a`–`p` per nibble.
    pub fn pseudonym(&self, identity: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(identity);
        let digest = mac.finalize().into_bytes();
        let mut pseudonym = String::with_capacity(self.prefix.len() + PSEUDONYM_LETTERS);
        pseudonym.push_str(&self.prefix);
        for byte in digest.iter().take(PSEUDONYM_LETTERS / 2) {
            pseudonym.push(nibble_letter(byte >> 4));
            pseudonym.push(nibble_letter(byte & 0x0f));
        }
        pseudonym
    }
}

/// Fewest ASCII digits in any text [`PII_VALUE_PATTERN`] matches: a landline `0` + 2-digit
/// area code + 3 + 4 digits (every other shape has more: mobiles 11, ID cards 17).
const FEWEST_PERSONAL_NUMBER_DIGITS: usize = 10;
/// Longest run of digits that is one personal number: the 18-digit ID card.
const LONGEST_PERSONAL_DIGIT_RUN: usize = 18;

/// Whether `bytes` certainly holds no phone or ID-card number, decided without the regex (which
/// was 5 % of a replay, run on five ids per event). Either it has fewer digits than any number;
/// or it is only digits and no number can be all of it: in a run of digits a match can only
/// start at the start, and a match followed by a digit is not personal, so the scan finds
/// something only when one shape matches the whole run — an 18-digit ID card, or a shape that
/// starts with `0` (landlines, `00` prefixes), `1` (mobiles) or `86`. So the 12-digit
/// community codes and 14-digit grid ids of Hebi (`41…`) and 20-digit GB/T 28181 device ids
/// skip the scan. Or, for any other text, no shape can start anywhere in it
/// ([`no_shape_can_start`]; weaker than the rule for a text of digits alone, which also knows
/// that the match must be the whole run). A property test holds this to the scan. A text of up
/// to [`LANE_TEXT_BYTES`] (every id) is looked at sixteen bytes at a time ([`digit_lanes`]),
/// a longer one eight bytes at a time ([`ascii_digit_count`], [`no_shape_can_start`]).
fn cannot_hold_a_personal_number(bytes: &[u8]) -> bool {
    let Some(digits) = digit_lanes(bytes) else {
        return cannot_hold_a_long_text_personal_number(bytes);
    };
    // A text of digits alone (three of an event's five ids) is counted by its length: the
    // target has no population-count instruction, and counting the bits took seventeen.
    let every_byte_a_digit = u64::from(digits) == (1u64 << bytes.len()) - 1;
    let digit_count = if every_byte_a_digit {
        bytes.len()
    } else {
        digits.count_ones() as usize
    };
    cannot_hold_with_digit_count(bytes, digit_count, || {
        no_shape_starts_at(bytes, lane_positions(digits & !(digits << 1)))
    })
}

/// [`cannot_hold_a_personal_number`] of a text longer than [`LANE_TEXT_BYTES`] (no id is):
/// apart, so that the ids' path does not save and restore the registers of its loops.
#[cold]
#[inline(never)]
fn cannot_hold_a_long_text_personal_number(bytes: &[u8]) -> bool {
    cannot_hold_with_digit_count(bytes, ascii_digit_count(bytes), || {
        no_shape_can_start(bytes)
    })
}

/// [`cannot_hold_a_personal_number`] once the digits of `bytes` are counted:
/// `no_shape_can_start` answers for a text that is not all digits.
fn cannot_hold_with_digit_count(
    bytes: &[u8],
    digit_count: usize,
    no_shape_can_start: impl FnOnce() -> bool,
) -> bool {
    if digit_count < FEWEST_PERSONAL_NUMBER_DIGITS {
        return true;
    }
    if digit_count != bytes.len() {
        return no_shape_can_start();
    }
    let first_digit_starts_no_shape = !matches!(bytes.first(), Some(b'0' | b'1' | b'8'));
    bytes.len() > LONGEST_PERSONAL_DIGIT_RUN
        || (bytes.len() != LONGEST_PERSONAL_DIGIT_RUN && first_digit_starts_no_shape)
}

/// Longest text whose digits [`digit_lanes`] finds sixteen bytes at a time: every id a
/// producer writes (event, device, community and grid ids, the source) is shorter.
const LANE_TEXT_BYTES: usize = 32;

/// One bit per byte of `bytes` (the first byte lowest) that is an ASCII digit, for a text of
/// at most [`LANE_TEXT_BYTES`]: one sixteen-byte look (a shorter text copied into zeros, which
/// are not digits) or two (the first and the last sixteen bytes, overlapping). The five ids of
/// every event are checked; eight bytes at a time, counting their digits and then finding
/// where their runs of digits start took two passes of about a hundred instructions an id.
/// `None` for a longer text.
fn digit_lanes(bytes: &[u8]) -> Option<u32> {
    let length = bytes.len();
    if length < 16 {
        let mut chunk = [0u8; 16];
        chunk.get_mut(..length)?.copy_from_slice(bytes);
        return Some(digit_lanes_of_chunk(chunk));
    }
    if length > LANE_TEXT_BYTES {
        return None;
    }
    let first = <[u8; 16]>::try_from(bytes.get(..16)?).ok()?;
    let last = <[u8; 16]>::try_from(bytes.get(length - 16..)?).ok()?;
    Some(digit_lanes_of_chunk(first) | (digit_lanes_of_chunk(last) << (length - 16)))
}

/// One bit per byte of `chunk` (the first byte lowest) that is an ASCII digit: a byte minus
/// `0` (wrapping) is at most 9 exactly for the digits.
fn digit_lanes_of_chunk(chunk: [u8; 16]) -> u32 {
    use wide::u8x16;
    let from_zero = u8x16::new(chunk) - u8x16::splat(b'0');
    byte_words::lane_bits(byte_words::lanes_at_most(from_zero, 9))
}

/// The positions of the set bits of `lanes`, lowest first.
fn lane_positions(lanes: u32) -> impl Iterator<Item = usize> {
    byte_words::set_bit_positions(u64::from(lanes)).map(|position| position as usize)
}

/// Whether no shape of [`PII_VALUE_PATTERN`] may match from any of `run_starts` (positions in
/// `bytes` where a run of digits starts).
fn no_shape_starts_at(bytes: &[u8], mut run_starts: impl Iterator<Item = usize>) -> bool {
    !run_starts.any(|position| shape_may_start(bytes.get(position..).unwrap_or_default()))
}

/// The ASCII digits in `bytes`, counted eight bytes at a time: counted one byte at a time
/// (`filter(is_ascii_digit).count()`), this was two thirds of the checks' pseudonymization on
/// a replay, run on five ids per event. Each word's digits are flagged by
/// [`byte_words::digit_flags`]. A property test holds this to the byte-at-a-time count.
fn ascii_digit_count(bytes: &[u8]) -> usize {
    let mut words = bytes.chunks_exact(8);
    let mut count = 0;
    for word in &mut words {
        count += flagged_bytes(byte_words::digit_flags(little_endian_word(word)));
    }
    let remaining = words.remainder().len();
    if remaining == 0 {
        return count;
    }
    // The last bytes: the eight bytes ending the text, with the flags of those already counted
    // shifted out (one load instead of assembling up to seven bytes), or the short text itself.
    let last_flags = match bytes.get(bytes.len().saturating_sub(8)..) {
        Some(last_eight) if bytes.len() >= 8 => {
            byte_words::digit_flags(little_endian_word(last_eight)) >> (8 * (8 - remaining))
        }
        _ => byte_words::digit_flags(little_endian_word(words.remainder())),
    };
    count + flagged_bytes(last_flags)
}

/// The bytes whose top bit `flags` sets (flags only in top bits).
fn flagged_bytes(flags: u64) -> usize {
    // Each byte is 0 or 1: the product's top byte is their sum (at most 8, no carry out).
    ((flags >> 7).wrapping_mul(byte_words::ONE_PER_BYTE) >> 56) as usize
}

/// Up to eight bytes as a little-endian word (the first byte lowest), padded with zeros (not
/// digits). A short word is assembled byte by byte: for at most seven bytes cheaper than a call
/// to copy them into a buffer.
fn little_endian_word(bytes: &[u8]) -> u64 {
    if let Ok(word) = <[u8; 8]>::try_from(bytes) {
        return u64::from_le_bytes(word);
    }
    bytes
        .iter()
        .rev()
        .fold(0u64, |word, byte| (word << 8) | u64::from(*byte))
}

/// Whether no shape of [`PII_VALUE_PATTERN`] can start anywhere in `bytes` (a text that is not
/// all digits, such as the simulator's event ids `sim-2a-0000000000`: a tenth of the checks'
/// time went to scanning them). A match starts at the start or after a non-digit, on a digit
/// or `+`, and its first characters narrow the shapes down: `0` must be followed by a digit
/// 1–9 (a landline) or by `086` (the `0086` prefix); `1` and `8` may start a mobile, an `86`
/// prefix or an ID card; any other digit only an ID card, whose first 17 characters are
/// digits; `+` must be followed by `86`, whose `8` then follows a non-digit and is a start of
/// its own. So only the first digit of each run of digits is looked at, and those are found
/// eight bytes at a time (a digit whose previous byte is not one; walking every byte was half
/// of the pseudonymizer's instructions). A property test holds this to the scan.
fn no_shape_can_start(bytes: &[u8]) -> bool {
    let mut previous_word_ends_in_digit = 0u64;
    for (word_index, word) in bytes.chunks(8).enumerate() {
        let digits = byte_words::digit_flags(little_endian_word(word));
        // A byte's flag moved onto the next byte: set where the previous byte is a digit.
        let after_digit = (digits << 8) | previous_word_ends_in_digit;
        let run_starts = digits & !after_digit;
        let positions = byte_words::set_bit_positions(run_starts)
            .map(|flag| word_index * 8 + (flag / 8) as usize);
        if !no_shape_starts_at(bytes, positions) {
            return false;
        }
        previous_word_ends_in_digit = (digits >> 56) & 0x80;
    }
    true
}

/// Whether some shape of [`PII_VALUE_PATTERN`] may match from the start of `rest`.
fn shape_may_start(rest: &[u8]) -> bool {
    match rest {
        [b'0', b'1'..=b'9', ..] | [b'0', b'0', b'8', b'6', ..] => true,
        [b'1' | b'8', ..] => true,
        [b'2'..=b'9', ..] => rest
            .get(..LONGEST_PERSONAL_DIGIT_RUN - 1)
            .is_some_and(|start| start.iter().all(u8::is_ascii_digit)),
        _ => false,
    }
}

/// See [`Pseudonymizer::is_pii_attribute_key`].
fn key_matches(lowercase_key: &str, entry: &str) -> bool {
    if entry.is_empty() {
        return false;
    }
    let short_latin_entry = entry.is_ascii() && entry.len() <= 3;
    if !short_latin_entry {
        return lowercase_key.contains(entry);
    }
    lowercase_key
        .split(|character: char| !character.is_alphanumeric())
        .any(|token| token == entry)
}

fn nibble_letter(nibble: u8) -> char {
    char::from(b'a' + (nibble & 0x0f))
}

/// The number's identity, so that `+86 138-0013-8000` and `13800138000` share a pseudonym:
/// its digits (and an ID card's `X`), without the country code; a landline that came with the
/// country code gets its trunk `0` back.
fn normalized_number(text: &[u8]) -> String {
    let compact: String = text
        .iter()
        .filter(|byte| byte.is_ascii_digit() || **byte == b'x' || **byte == b'X' || **byte == b'+')
        .map(|byte| char::from(byte.to_ascii_uppercase()))
        .collect();
    let without_country_code = if let Some(rest) = compact.strip_prefix("+86") {
        Some(rest)
    } else if let Some(rest) = compact.strip_prefix("0086") {
        Some(rest)
    } else if compact.len() == 13 && compact.starts_with("861") {
        compact.get(2..)
    } else {
        None
    };
    let Some(national) = without_country_code else {
        return compact.replace('+', "");
    };
    let is_mobile = national.len() == 11 && national.starts_with('1');
    if is_mobile || national.starts_with('0') {
        return national.to_string();
    }
    format!("0{national}")
}

/// The fallback when the pattern is unavailable: every ASCII digit becomes `#`.
fn mask_every_digit(bytes: &[u8]) -> Cow<'_, [u8]> {
    if !bytes.iter().any(u8::is_ascii_digit) {
        return Cow::Borrowed(bytes);
    }
    Cow::Owned(
        bytes
            .iter()
            .map(|byte| if byte.is_ascii_digit() { b'#' } else { *byte })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]
        #[test]
        fn digits_counted_by_the_word_are_the_digits_counted_by_the_byte(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            digits in "[0-9a-z/:\\x80-\\xff]{0,40}",
        ) {
            for text in [bytes.as_slice(), digits.as_bytes()] {
                proptest::prop_assert_eq!(
                    ascii_digit_count(text),
                    text.iter().filter(|byte| byte.is_ascii_digit()).count()
                );
            }
        }

        /// Up to 32 bytes the digits are found sixteen bytes at a time; the answer is the one
        /// the eight-byte words give (any bytes, and texts shaped like ids and numbers).
        #[test]
        fn short_texts_are_judged_by_their_lanes_as_by_the_words(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..=33),
            text in proptest::prop_oneof![
                "[0-9a-z/:\\x80-\\xff]{0,33}",
                "[a-z+ -]{0,3}(\\+|0|00|0086|86|1|8|[2-79])[0-9 +Xx-]{6,28}",
                "[0-9]{9,33}",
            ],
        ) {
            for text in [bytes.as_slice(), text.as_bytes()] {
                let by_words = cannot_hold_with_digit_count(text, ascii_digit_count(text), || {
                    no_shape_can_start(text)
                });
                proptest::prop_assert_eq!(cannot_hold_a_personal_number(text), by_words);
                if let Some(digits) = digit_lanes(text) {
                    let digit_positions: Vec<usize> = lane_positions(digits).collect();
                    let expected: Vec<usize> = (0..text.len())
                        .filter(|position| text[*position].is_ascii_digit())
                        .collect();
                    proptest::prop_assert_eq!(digit_positions, expected);
                }
            }
        }

        #[test]
        fn texts_the_shortcut_passes_hold_no_number_for_the_scan_either(
            text in proptest::prop_oneof![
                "[0-9 +Xx-]{0,9}",
                "\\PC{0,9}",
                "[0-9]{19,40}",
                "(86|0086|0|1[3-9]|41)[0-9]{17,30}",
                "[0-9]{8,20}",
                "[a-z-]{0,8}[0-9]{9,12}",
                "(0|1[3-9]|86|0086|41|[2-9])[0-9 -]{7,17}",
                "[0-9]{1,4}[a-z:]{1,3}[0-9]{6,12}",
                "sim-[0-9a-z]{2}-[0-9]{10}",
                "[a-z+ -]{0,3}(\\+|\\+8|0|00|008|0086|86|1|8|[2-79])[0-9 +Xx-]{6,20}",
                "[a-z]{0,3}[2-79][0-9]{14,17}[0-9Xx]?[a-z -]{0,3}[0-9]{0,12}",
                "([+a-z -]{1,2}[0-9]{1,6}){2,6}",
            ]
        ) {
            let pseudonymizer = pseudonymizer();
            let pattern = pseudonymizer.pii_values.as_ref().unwrap();
            proptest::prop_assume!(cannot_hold_a_personal_number(text.as_bytes()));
            proptest::prop_assert_eq!(
                pseudonymizer.scan_and_scrub(pattern, text.as_bytes()),
                Cow::Borrowed(text.as_bytes())
            );
        }
    }

    #[test]
    fn hebi_ids_skip_the_scan_and_digit_runs_shaped_like_a_number_do_not() {
        for id in [
            "410602001001",
            "41060200100101",
            "41060200000000000001",
            "evt-000123456",
            "sim-000001",
            "sim-2a-0000000000",
            "skew-7-4100000000",
        ] {
            assert!(cannot_hold_a_personal_number(id.as_bytes()), "{id}");
        }
        for number_shaped in [
            "13800138000",
            "8613800138000",
            "410602199003077777",
            "01012345678",
            "id-13800138000",
            "tel:+8613800138000",
            "call 0086 138 0013 8000",
            "x008613800138000",
            "fax+86 371 1234 5678",
            "id 51060219900307777X",
            "x0371-12345678",
            "id 510602199003077777",
        ] {
            assert!(
                !cannot_hold_a_personal_number(number_shaped.as_bytes()),
                "{number_shaped}"
            );
        }
    }

    #[test]
    fn a_personal_number_at_the_shortest_and_longest_lengths_is_still_scanned() {
        for number in ["0101234567", "110101199003077777"] {
            assert!(!cannot_hold_a_personal_number(number.as_bytes()));
            assert!(
                matches!(
                    pseudonymizer().scrub_bytes(number.as_bytes()),
                    Cow::Owned(_)
                ),
                "{number}"
            );
        }
    }

    fn pseudonymizer() -> Pseudonymizer {
        Pseudonymizer::new(&PrivacySettings {
            key: b"test-key".to_vec(),
            key_id: "k1".to_string(),
            pii_attribute_keys: DEFAULT_PII_ATTRIBUTE_KEYS
                .iter()
                .map(ToString::to_string)
                .collect(),
        })
    }

    #[test]
    fn the_value_pattern_compiles() {
        assert!(Regex::new(PII_VALUE_PATTERN).is_ok());
    }

    #[test]
    fn every_phone_and_id_format_is_scrubbed_from_text() {
        let scrubber = pseudonymizer();
        for (text, secret) in [
            ("call 13800138000 now", "13800138000"),
            ("+8613800138000", "13800138000"),
            ("0086 138 0013 8000", "0013"),
            ("138-0013-8000", "0013-8000"),
            ("138 0013 8000", "0013 8000"),
            ("tel:010-12345678", "12345678"),
            ("0371 6888 1234", "6888 1234"),
            ("+86 10 12345678", "12345678"),
            ("id 11010119900307851X.", "1101011990030785"),
            ("110101199003078515", "110101199003078515"),
            ("电话13800138000。", "13800138000"),
            ("13800138000,13900139000", "13900139000"),
        ] {
            let scrubbed = scrubber.scrub_text(text);
            assert!(!scrubbed.contains(secret), "{text} -> {scrubbed}");
            assert!(scrubbed.contains("pseudo:k1:"), "{text} -> {scrubbed}");
        }
    }

    #[test]
    fn grid_ids_device_ids_and_other_numbers_are_left_alone() {
        let scrubber = pseudonymizer();
        for text in [
            "41061100100101",
            "41060000131100000001",
            "138001380001",
            "e001",
            "2026-03-02T08:00:00Z",
            "lat 34.7466 lon 113.6253",
            "96110",
        ] {
            assert_eq!(scrubber.scrub_text(text), text);
        }
    }

    #[test]
    fn spellings_of_one_number_share_a_pseudonym() {
        let scrubber = pseudonymizer();
        let plain = scrubber.scrub_text("13800138000").into_owned();
        for other in ["+86 138-0013-8000", "008613800138000", "138 0013 8000"] {
            assert_eq!(scrubber.scrub_text(other), plain, "{other}");
        }
        assert_eq!(
            scrubber.scrub_text("+86 10 12345678"),
            scrubber.scrub_text("010-12345678")
        );
    }

    #[test]
    fn pseudonyms_carry_the_key_id_and_128_bits_in_letters_and_are_kept_on_replay() {
        let scrubber = pseudonymizer();
        let pseudonym = scrubber.scrub_text("13800138000").into_owned();
        let letters = pseudonym.strip_prefix("pseudo:k1:").unwrap();
        assert_eq!(letters.len(), 32);
        assert!(letters
            .bytes()
            .all(|letter| (b'a'..=b'p').contains(&letter)));
        assert!(Pseudonymizer::is_pseudonym(&pseudonym));
        assert_eq!(scrubber.scrub_text(&pseudonym), pseudonym);
        assert_eq!(scrubber.pseudonymize_whole(&pseudonym), pseudonym);
    }

    #[test]
    fn a_forged_pseudo_value_is_not_trusted() {
        let scrubber = pseudonymizer();
        for forged in [
            "pseudo:13800138000",
            "pseudo:k1:13800138000",
            "pseudo:k1:abcd",
        ] {
            let whole = scrubber.pseudonymize_whole(forged);
            assert!(Pseudonymizer::is_pseudonym(&whole), "{forged} -> {whole}");
            assert!(!scrubber.scrub_text(forged).contains("13800138000"));
        }
    }

    #[test]
    fn personal_keys_match_tokens_and_chinese_names_but_not_lookalikes() {
        let scrubber = pseudonymizer();
        for key in [
            "phone",
            "victim_mobile",
            "Tel",
            "contact-tel",
            "联系电话",
            "紧急联系方式",
            "手机号",
        ] {
            assert!(scrubber.is_pii_attribute_key(key), "{key}");
        }
        for key in ["hotel", "satellite", "channel", "scenario"] {
            assert!(!scrubber.is_pii_attribute_key(key), "{key}");
        }
    }

    #[test]
    fn personal_attribute_values_are_pseudonymized_whole_and_keys_are_scrubbed() {
        let scrubber = pseudonymizer();
        let mut event = IncidentEvent {
            event_id: "evt-13800138000".to_string(),
            device_id: "+86 139 0013 9000".to_string(),
            attributes: [
                ("tel".to_string(), "ask the guard".to_string()),
                ("13700137000".to_string(), "x".to_string()),
                ("note".to_string(), "callback 0371-68881234".to_string()),
                ("channel".to_string(), "96110".to_string()),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        scrubber.pseudonymize_event(&mut event);
        let text = format!("{event:?}");
        for secret in [
            "13800138000",
            "0013 9000",
            "13700137000",
            "68881234",
            "ask the guard",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(event.attributes.get("channel").unwrap(), "96110");
        let once = event.clone();
        scrubber.pseudonymize_event(&mut event);
        assert_eq!(event, once, "idempotent");
    }

    proptest::proptest! {
        #[test]
        fn any_mobile_spelling_inside_any_text_is_scrubbed(
            prefix in "[a-zA-Z :,.;()电话]{0,12}",
            country_code in proptest::sample::select(vec!["", "+86", "0086", "+86 ", "0086-", "86"]),
            first in "1[3-9][0-9]",
            middle in "[0-9]{4}",
            last in "[0-9]{4}",
            separator in proptest::sample::select(vec!["", " ", "-"]),
            suffix in "[a-zA-Z :,.;()。]{0,12}",
        ) {
            let number = format!("{first}{separator}{middle}{separator}{last}");
            let text = format!("{prefix}{country_code}{number}{suffix}");
            let scrubbed = pseudonymizer().scrub_text(&text).into_owned();
            proptest::prop_assert!(!scrubbed.contains(&number), "{} -> {}", text, scrubbed);
            let digits = [first.as_str(), middle.as_str(), last.as_str()].concat();
            proptest::prop_assert!(!scrubbed.contains(&digits));
            proptest::prop_assert!(scrubbed.contains("pseudo:k1:"));
        }

        #[test]
        fn scrubbing_arbitrary_bytes_never_panics_and_is_idempotent(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)
        ) {
            let scrubber = pseudonymizer();
            let once = scrubber.scrub_bytes(&bytes).into_owned();
            let twice = scrubber.scrub_bytes(&once).into_owned();
            proptest::prop_assert_eq!(once, twice);
        }
    }

    #[test]
    fn an_invalid_key_id_is_written_as_a_visible_stand_in() {
        for key_id in ["", "K1", "1k", "k-1", "k123456789", "13800138000"] {
            assert!(!is_valid_key_id(key_id), "{key_id:?}");
            let pseudonymizer = Pseudonymizer::new(&PrivacySettings {
                key: b"key".to_vec(),
                key_id: key_id.to_string(),
                pii_attribute_keys: Vec::new(),
            });
            assert!(pseudonymizer.pseudonym(b"1").starts_with("pseudo:invalid:"));
        }
    }
}
