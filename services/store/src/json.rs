//! JSON text in the form the store keeps: compact, as `serde_json` writes a parsed
//! `Value`, written straight from the body bytes without building the `Value`.
//!
//! A parsed `Value` keeps the last of repeated keys (at the first one's place); text with
//! repeated keys is refused here, and the caller reads that body the slower way.
//!
//! Also the pieces the common-shape readers of spans and enqueues share: [`Text`], a
//! string borrowed from the body, [`set_once`] and [`uncommon`].

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::model::Json;

/// Keys compared pairwise up to this many, sorted beyond.
const LINEAR_DUPLICATE_CHECK: usize = 16;

/// Whether any key occurs twice.
pub(crate) fn has_duplicates<'a>(keys: impl ExactSizeIterator<Item = &'a str> + Clone) -> bool {
    if keys.len() <= LINEAR_DUPLICATE_CHECK {
        return keys
            .clone()
            .enumerate()
            .any(|(i, k)| keys.clone().take(i).any(|seen| seen == k));
    }
    let mut sorted: Vec<&str> = keys.collect();
    sorted.sort_unstable();
    sorted.windows(2).any(|w| w[0] == w[1])
}

/// Why a common-shape reader gave up (never shown: the body is then read the slower way,
/// which reports what is wrong with it, if anything).
pub(crate) fn uncommon<E: de::Error>(what: &str) -> E {
    E::custom(format_args!("not in the common shape: {what}"))
}

/// A JSON string borrowed from the input unless it had escapes.
#[derive(Debug, PartialEq)]
pub(crate) struct Text<'a>(pub Cow<'a, str>);

impl Serialize for Text<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// Fills a field's slot, refusing a key seen before in the same object: a parsed `Value`
/// would keep the last one, which the checked readers do.
pub(crate) fn set_once<T, E: de::Error>(slot: &mut Option<T>, value: T) -> Result<(), E> {
    match slot.replace(value) {
        None => Ok(()),
        Some(_) => Err(uncommon("repeated key")),
    }
}

/// Writes the value being deserialized into `out` as compact JSON.
pub(crate) struct Canonical<'o> {
    pub out: &'o mut Vec<u8>,
}

/// Serializes scalars and strings into memory; they have no way to fail.
fn put<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(&mut *out, value)
        .expect("serializing strings and numbers into memory cannot fail");
}

impl<'de> DeserializeSeed<'de> for Canonical<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Canonical<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        put(self.out, &v);
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        put(self.out, &v);
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        put(self.out, &v);
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        put(self.out, &v);
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        put(self.out, v);
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.out.push(b'[');
        let mut first = true;
        loop {
            let at = self.out.len();
            if !first {
                self.out.push(b',');
            }
            if seq
                .next_element_seed(Canonical {
                    out: &mut *self.out,
                })?
                .is_none()
            {
                self.out.truncate(at);
                break;
            }
            first = false;
        }
        self.out.push(b']');
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.out.push(b'{');
        let mut keys: Vec<Text<'de>> = Vec::new();
        while let Some(key) = map.next_key::<Text<'de>>()? {
            if !keys.is_empty() {
                self.out.push(b',');
            }
            put(self.out, key.0.as_ref());
            self.out.push(b':');
            map.next_value_seed(Canonical {
                out: &mut *self.out,
            })?;
            keys.push(key);
        }
        if has_duplicates(keys.iter().map(|k| k.0.as_ref())) {
            return Err(uncommon("repeated key"));
        }
        self.out.push(b'}');
        Ok(())
    }
}

/// Reads one value as stored JSON text.
pub(crate) struct CanonicalJson;

impl<'de> DeserializeSeed<'de> for CanonicalJson {
    type Value = Json;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        let mut out = Vec::with_capacity(128);
        Canonical { out: &mut out }.deserialize(d)?;
        let text = String::from_utf8(out).expect("serde_json writes UTF-8");
        RawValue::from_string(text)
            .map(Arc::from)
            .map_err(|_| uncommon("unreadable text"))
    }
}

/// A JSON object's members in document order, values as their original text.
pub(crate) struct Entries<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(Text(key)) = map.next_key()? {
                    let value: &'de RawValue = map.next_value()?;
                    out.push((key, value));
                }
                Ok(Entries(out))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn canonical(text: &str) -> Option<String> {
        let mut de = serde_json::Deserializer::from_str(text);
        let json = CanonicalJson.deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some(json.get().to_owned())
    }

    /// Byte for byte what parsing into a `Value` and writing it back gives.
    #[test]
    fn matches_a_value_round_trip() {
        for text in [
            "null",
            "true",
            " [ 1 , -2, 3.50, 1e3, -0.0, 18446744073709551615, 1.0000000000000002 ] ",
            r#"{"a": {"b": [], "c": {}}, "é\u00e9": "\u0001\"\\/\ud83d\ude00", "n": null}"#,
            r#"[[[{"x": [{"y": 1}]}]], "", {}]"#,
            "123456789012345678901234567890",
            r#""plain""#,
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(canonical(text), Some(value.to_string()), "{text}");
        }
    }

    #[test]
    fn refuses_repeated_keys_at_any_depth() {
        assert_eq!(canonical(r#"{"a": 1, "a": 2}"#), None);
        assert_eq!(canonical(r#"[{"x": {"k": 1, "k": 1}}]"#), None);
        let many: Vec<String> = (0..40).map(|i| format!("\"k{}\": {i}", i % 39)).collect();
        assert_eq!(canonical(&format!("{{{}}}", many.join(","))), None);
        let distinct: Vec<String> = (0..40).map(|i| format!("\"k{i}\": {i}")).collect();
        assert!(canonical(&format!("{{{}}}", distinct.join(","))).is_some());
    }

    mod randomized {
        use proptest::prelude::*;
        use serde_json::Value;

        use super::canonical;

        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(Value::from),
                "\\PC{0,12}".prop_map(Value::String),
                any::<String>().prop_map(Value::String),
            ];
            leaf.prop_recursive(5, 64, 6, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    proptest::collection::btree_map(".{0,6}", inner, 0..6)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: agl_common::fuzzing::cases(3000),
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            /// Any document, compact or pretty, is kept as parsing and writing it gives.
            #[test]
            fn any_document_is_kept_as_a_value_round_trip(doc in value(), pretty in any::<bool>()) {
                let text = if pretty {
                    serde_json::to_string_pretty(&doc).unwrap()
                } else {
                    serde_json::to_string(&doc).unwrap()
                };
                let expected = serde_json::from_str::<Value>(&text).unwrap().to_string();
                prop_assert_eq!(canonical(&text), Some(expected));
            }

            /// Any text: refused where a `Value` parse refuses, else the same bytes (or
            /// refused for a repeated key, which the caller then reads the slow way).
            #[test]
            fn any_text_is_refused_or_kept_exactly(text in prop_oneof![
                ".{0,64}",
                "[\\[\\]{}\",:0-9a-z \\\\.eE+-]{0,64}",
            ]) {
                match serde_json::from_str::<Value>(&text) {
                    Err(_) => prop_assert_eq!(canonical(&text), None),
                    Ok(value) => {
                        if let Some(kept) = canonical(&text) {
                            prop_assert_eq!(kept, value.to_string());
                        }
                    }
                }
            }
        }
    }
}
