//! [`ByteSize`]: a size in bytes as written in the configuration, `"64KiB"`, `"32MiB"` or a
//! plain integer.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Units understood, longest first so that `KiB` is not read as `B` after `Ki`. Binary units
/// (`KiB`) are powers of 1024, decimal ones (`KB`) of 1000; case does not matter.
const UNITS: [(&str, u64); 7] = [
    ("kib", KIB),
    ("mib", MIB),
    ("gib", GIB),
    ("kb", 1000),
    ("mb", 1000 * 1000),
    ("gb", 1000 * 1000 * 1000),
    ("b", 1),
];

/// A number of bytes. Written back as `NMiB` or `NKiB` when it is a whole number of them,
/// else as an integer, so that `--check-config`'s output reads as it was written and is taken
/// again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn kib(n: u64) -> Self {
        Self(n * KIB)
    }

    pub const fn mib(n: u64) -> Self {
        Self(n * MIB)
    }

    pub fn bytes(self) -> u64 {
        self.0
    }

    /// `"64KiB"`, `"32 MiB"`, `"1000"`, `"10kb"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let (number, unit) = text.split_at(digits);
        let hint = "expected a size such as \"64KiB\", \"32MiB\" or a number of bytes";
        let n: u64 = number.parse().map_err(|_| format!("{text:?}: {hint}"))?;
        let unit = unit.trim().to_ascii_lowercase();
        let factor = if unit.is_empty() {
            1
        } else {
            UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|(_, f)| *f)
                .ok_or_else(|| format!("{text:?}: unknown unit; {hint}"))?
        };
        n.checked_mul(factor)
            .map(Self)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("0"),
            n if n.is_multiple_of(GIB) => write!(f, "{}GiB", n / GIB),
            n if n.is_multiple_of(MIB) => write!(f, "{}MiB", n / MIB),
            n if n.is_multiple_of(KIB) => write!(f, "{}KiB", n / KIB),
            n => write!(f, "{n}"),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 != 0 && self.0.is_multiple_of(KIB) {
            s.collect_str(self)
        } else {
            s.serialize_u64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"64KiB\", \"32MiB\" or a number of bytes")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print_back() {
        for (text, bytes, shown) in [
            ("64KiB", 65_536, "64KiB"),
            ("32MiB", 33_554_432, "32MiB"),
            ("32 mib", 33_554_432, "32MiB"),
            ("1GiB", 1 << 30, "1GiB"),
            ("1500", 1500, "1500"),
            ("10KB", 10_000, "10000"),
            ("2048B", 2048, "2KiB"),
        ] {
            let size = ByteSize::parse(text).expect(text);
            assert_eq!(size.bytes(), bytes, "{text}");
            assert_eq!(size.to_string(), shown, "{text}");
            assert_eq!(ByteSize::parse(&size.to_string()), Ok(size), "{text}");
        }
        for bad in ["", "KiB", "64 KiBs", "-1", "1.5MiB", "99999999999GiB"] {
            assert!(ByteSize::parse(bad).is_err(), "{bad:?}");
        }
    }
}
