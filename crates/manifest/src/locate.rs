//! Finding the line and column of a field path, for errors found after
//! deserialization (duplicate ports, undefined volumes).
//!
//! Neither deserializer hands out positions for values, but both attach their
//! current position to an error a visitor raises. So we walk the text again
//! with a visitor that follows the path and fails, with a marker message, on
//! reaching its end; the error's position is the field's.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

use crate::error::{FieldPath, Segment};
use crate::Format;

const FOUND: &str = "\u{0}sealpod-manifest: field found";
const NOT_FOUND: &str = "\u{0}sealpod-manifest: field not found";

/// The 1-based (line, column) of the value at `path`, if the text has one.
pub(crate) fn locate(text: &str, format: Format, path: &FieldPath) -> Option<(usize, usize)> {
    let seed = Walk(&path.0);
    match format {
        Format::Json => {
            let mut deserializer = serde_json::Deserializer::from_str(text);
            match seed.deserialize(&mut deserializer) {
                Err(err) if err.to_string().contains(FOUND) && err.line() > 0 => Some((err.line(), err.column())),
                _ => None,
            }
        }
        Format::Yaml => match seed.deserialize(serde_yaml_ng::Deserializer::from_str(text)) {
            Err(err) if err.to_string().contains(FOUND) => err.location().map(|at| (at.line(), at.column())),
            _ => None,
        },
    }
}

/// Follows the remaining path into whatever value comes next.
#[derive(Clone, Copy)]
struct Walk<'p>(&'p [Segment]);

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Walk<'_> {
    fn scalar<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(if self.0.is_empty() { FOUND } else { NOT_FOUND }))
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (wanted, rest) = match self.0.split_first() {
            None => return Err(de::Error::custom(FOUND)),
            Some((Segment::Index(wanted), rest)) => (*wanted, rest),
            Some((Segment::Key(_), _)) => return Err(de::Error::custom(NOT_FOUND)),
        };
        for _ in 0..wanted {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(de::Error::custom(NOT_FOUND));
            }
        }
        seq.next_element_seed(Walk(rest))?;
        Err(de::Error::custom(NOT_FOUND))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (wanted, rest) = match self.0.split_first() {
            None => return Err(de::Error::custom(FOUND)),
            Some((Segment::Key(wanted), rest)) => (wanted, rest),
            Some((Segment::Index(_), _)) => return Err(de::Error::custom(NOT_FOUND)),
        };
        while let Some(KeyText(key)) = map.next_key()? {
            if key.as_deref() == Some(wanted.as_str()) {
                map.next_value_seed(Walk(rest))?;
                break;
            }
            map.next_value::<IgnoredAny>()?;
        }
        Err(de::Error::custom(NOT_FOUND))
    }
}

/// A map key as text, `None` for keys that are maps or lists.
struct KeyText(Option<String>);

impl<'de> de::Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map key")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_owned())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyText, E> {
                Ok(KeyText(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyText, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(KeyText(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyText, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(KeyText(None))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}
