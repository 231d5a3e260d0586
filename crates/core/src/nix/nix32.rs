//! Nix's base-32 encoding ("nix32"): the alphabet and bit order Nix uses for store path hash
//! parts and for `sha256:<nix32>` hashes.
//!
//! It is not RFC 4648 base32: the alphabet omits `e o t u`, and the last byte of the input
//! becomes the first characters of the output.

/// The 32 characters Nix uses, in value order.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Errors decoding a nix32 string.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Nix32Error {
    #[error("invalid nix32 character {0:?}")]
    InvalidChar(char),
    #[error("nix32 string of length {0} does not encode a whole number of bytes")]
    InvalidLength(usize),
    #[error("nix32 string has non-zero padding bits")]
    NonZeroPadding,
}

/// Length of the nix32 encoding of `bytes` bytes.
pub const fn encoded_len(bytes: usize) -> usize {
    if bytes == 0 {
        0
    } else {
        (bytes * 8 - 1) / 5 + 1
    }
}

/// Encode bytes as nix32.
pub fn encode(input: &[u8]) -> String {
    let len = encoded_len(input.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let bit = n * 5;
        let i = bit / 8;
        let j = bit % 8;
        let low = u16::from(input[i]) >> j;
        let high = if i + 1 < input.len() {
            u16::from(input[i + 1]) << (8 - j)
        } else {
            0
        };
        out.push(char::from(ALPHABET[usize::from((low | high) & 0x1f)]));
    }
    out
}

/// Each byte's digit value, or 0xff for bytes outside the alphabet: one load per character
/// instead of a search of the alphabet.
const VALUES: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut digit = 0;
    while digit < ALPHABET.len() {
        table[ALPHABET[digit] as usize] = digit as u8;
        digit += 1;
    }
    table
};

/// Whether `c` can appear in a nix32 string (and so in a store path hash part).
pub fn is_nix32_char(c: u8) -> bool {
    VALUES[usize::from(c)] != 0xff
}

/// Whether [`decode`] takes `s`, without decoding it: a length that encodes whole bytes,
/// every character a digit, and the bits above the last byte (in the first character) zero.
pub fn is_valid(s: &str) -> bool {
    let chars = s.as_bytes();
    let bytes = chars.len() * 5 / 8;
    if encoded_len(bytes) != chars.len() {
        return false;
    }
    if chars.iter().fold(0, |all, &c| all | VALUES[usize::from(c)]) > 31 {
        return false;
    }
    // The first character holds the highest 5 bits, of which 5 × len − 8 × bytes are past
    // the last byte.
    let spare = chars.len() * 5 - bytes * 8;
    chars
        .first()
        .is_none_or(|&c| VALUES[usize::from(c)] >> (5 - spare) == 0)
}

/// Decode a nix32 string into the bytes it encodes.
pub fn decode(s: &str) -> Result<Vec<u8>, Nix32Error> {
    let chars = s.as_bytes();
    // The byte count is the largest whose encoding has this length.
    let bytes = chars.len() * 5 / 8;
    if encoded_len(bytes) != chars.len() {
        return Err(Nix32Error::InvalidLength(chars.len()));
    }
    // Every character checked first (an OR of the values is over 31 only if one is not a
    // digit), so that the loops below only move bits. The error names the last bad one.
    if chars.iter().fold(0, |all, &c| all | VALUES[usize::from(c)]) > 31
        && let Some(&c) = chars.iter().rev().find(|&&c| !is_nix32_char(c))
    {
        return Err(Nix32Error::InvalidChar(char::from(c)));
    }
    let digits = |group: &[u8]| {
        group.iter().fold(0u64, |word, &c| {
            word << 5 | u64::from(VALUES[usize::from(c)])
        })
    };
    // The last character holds the lowest 5 bits and byte 0 is the lowest 8: eight
    // characters from the end make five bytes.
    let mut out = Vec::with_capacity(bytes);
    let mut rest = chars;
    while rest.len() >= 8 {
        let (head, group) = rest.split_at(rest.len() - 8);
        out.extend_from_slice(&digits(group).to_le_bytes()[..5]);
        rest = head;
    }
    // Fewer than 8 characters left, holding the last bytes and fewer than 5 bits more, which
    // must be zero.
    let word = digits(rest);
    let left = bytes - out.len();
    out.extend_from_slice(&word.to_le_bytes()[..left]);
    if word >> (8 * left) != 0 {
        return Err(Nix32Error::NonZeroPadding);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_length() {
        for len in 0..70 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = encode(&bytes);
            assert_eq!(text.len(), encoded_len(len));
            assert_eq!(decode(&text).unwrap(), bytes);
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(encode(&[0u8; 20]), "0".repeat(32));
        let mut last = [0u8; 16];
        last[15] = 1;
        assert_eq!(encode(&last), "01000000000000000000000000");
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            decode("e0000000000000000000000000000000"),
            Err(Nix32Error::InvalidChar('e'))
        );
        assert_eq!(decode("000"), Err(Nix32Error::InvalidLength(3)));
        // 26 chars carry 130 bits for 128: a top digit above 7 sets bits that do not exist.
        assert_eq!(
            decode("zzzzzzzzzzzzzzzzzzzzzzzzzz"),
            Err(Nix32Error::NonZeroPadding)
        );
    }

    /// Nix's own decoding, digit by digit (libutil's `parseHash32`), as the reference.
    fn decode_digit_by_digit(s: &str) -> Result<Vec<u8>, Nix32Error> {
        let chars = s.as_bytes();
        let size = chars.len() * 5 / 8;
        if encoded_len(size) != chars.len() {
            return Err(Nix32Error::InvalidLength(chars.len()));
        }
        let mut out = vec![0u8; size];
        for n in 0..chars.len() {
            let c = chars[chars.len() - n - 1];
            let digit = ALPHABET.iter().position(|&a| a == c);
            let digit = digit.ok_or(Nix32Error::InvalidChar(char::from(c)))? as u16;
            let (i, j) = (n * 5 / 8, n * 5 % 8);
            if i < size {
                out[i] |= (digit << j) as u8;
            }
            let carry = (digit << j) >> 8;
            if i + 1 < size {
                out[i + 1] |= carry as u8;
            } else if carry != 0 || (i >= size && digit != 0) {
                return Err(Nix32Error::NonZeroPadding);
            }
        }
        Ok(out)
    }

    #[test]
    fn decodes_as_digit_by_digit_on_every_length_and_top_digit() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in 0..80 {
            for round in 0..64 {
                let mut text: Vec<u8> =
                    (0..len).map(|_| ALPHABET[(next() % 32) as usize]).collect();
                // The top digit decides the padding bits: try each value in turn.
                if len > 0 {
                    text[0] = ALPHABET[round % 32];
                }
                // Now and then a character outside the alphabet.
                if round % 7 == 3 && len > 0 {
                    let at = (next() % len as u64) as usize;
                    text[at] = [b'e', b'o', b't', b'u', b'A', b'-', 0xc3][round % 7];
                }
                let text = String::from_utf8_lossy(&text).into_owned();
                assert_eq!(decode(&text), decode_digit_by_digit(&text), "{text:?}");
                assert_eq!(is_valid(&text), decode(&text).is_ok(), "{text:?}");
            }
        }
    }

    #[test]
    fn char_class_matches_alphabet() {
        for c in 0..=255u8 {
            assert_eq!(is_nix32_char(c), ALPHABET.contains(&c), "{c}");
        }
    }
}

#[cfg(test)]
mod golden {
    use super::*;

    /// Every case of the shared `nix32.json` (from `nix-hash --to-base32`) round-trips.
    #[test]
    fn shared_vectors_round_trip() {
        let doc = crate::testing::shared_json("vectors/nix32.json");
        let cases = doc["vectors"].as_array().unwrap();
        assert!(cases.len() >= 20);
        for case in cases {
            let hex = case["hex"].as_str().unwrap();
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            let want = case["nix32"].as_str().unwrap();
            assert_eq!(encode(&bytes), want, "{case}");
            assert_eq!(decode(want).unwrap(), bytes, "{case}");
        }
        let fold = &doc["compression_example"];
        let digest = crate::nix::hash::Hash::of(
            crate::nix::hash::HashAlgo::Sha256,
            fold["fingerprint"].as_str().unwrap().as_bytes(),
        );
        assert_eq!(digest.to_hex(), fold["sha256_hex"].as_str().unwrap());
        let folded = crate::nix::hash::fold(digest.bytes(), 20);
        assert_eq!(
            crate::nix::hash::to_hex(&folded),
            fold["compressed_hex"].as_str().unwrap()
        );
        assert_eq!(encode(&folded), fold["hash_part"].as_str().unwrap());
    }
}
