//! Reads the values at a few JSON pointers of a message without building a tree: the
//! document is walked once at each level on a pointer's path, members off the path are
//! skipped (`IgnoredAny`), keys are compared where they lie (no allocation unless a key
//! has escapes), and the values found are borrowed raw JSON text. The label join reads
//! an id and a prediction (or label) this way from every message of a stream with labels,
//! so it must cost little next to the stream's own decoding.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

/// The raw values at `pointers` (RFC 6901; `None` for an absent pointer or where the
/// path does not exist), or `Err` when `payload` is not one JSON document.
pub fn lookup<'a, const N: usize>(
    payload: &'a [u8],
    pointers: [Option<&str>; N],
) -> Result<[Option<&'a RawValue>; N], ()> {
    let text = std::str::from_utf8(payload).map_err(|_| ())?;
    let heads = pointers.map(first_segment);
    let mut de = serde_json::Deserializer::from_str(text);
    let found = Level { wanted: heads }.deserialize(&mut de).map_err(|_| ())?;
    de.end().map_err(|_| ())?;
    let mut out = [None; N];
    for i in 0..N {
        let (Some(pointer), Some(mut value)) = (pointers[i], found[i]) else { continue };
        let mut rest = pointer[1..].split('/').skip(1);
        let mut ok = true;
        for segment in rest.by_ref() {
            let mut de = serde_json::Deserializer::from_str(value.get());
            match (Level { wanted: [Some(segment)] }).deserialize(&mut de) {
                Ok([Some(v)]) => value = v,
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            out[i] = Some(value);
        }
    }
    Ok(out)
}

/// A pointer's first segment (`None` for no pointer or the whole document).
fn first_segment(pointer: Option<&str>) -> Option<&str> {
    let rest = pointer?.strip_prefix('/')?;
    Some(rest.split('/').next().unwrap_or(""))
}

/// One level of the walk: the members (or array elements) named by `wanted`, each a
/// pointer segment (still escaped: `~0`, `~1`).
struct Level<'k, const N: usize> {
    wanted: [Option<&'k str>; N],
}

impl<'de, const N: usize> DeserializeSeed<'de> for Level<'_, N> {
    type Value = [Option<&'de RawValue>; N];
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

fn segment_matches(segment: &str, key: &str) -> bool {
    if segment.contains('~') { segment.replace("~1", "/").replace("~0", "~") == key } else { segment == key }
}

impl<'de, const N: usize> Visitor<'de> for Level<'_, N> {
    type Value = [Option<&'de RawValue>; N];

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = [None; N];
        while let Some(hit) = map.next_key_seed(Key { wanted: self.wanted })? {
            if hit == [false; N] {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let value: &'de RawValue = map.next_value()?;
            for i in 0..N {
                if hit[i] {
                    found[i] = Some(value);
                }
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let index = |w: Option<&str>| w.and_then(|s| s.parse::<usize>().ok());
        let wanted = self.wanted.map(index);
        let mut found = [None; N];
        let mut n = 0usize;
        loop {
            if wanted.contains(&Some(n)) {
                let Some(value) = seq.next_element::<&'de RawValue>()? else { break };
                for i in 0..N {
                    if wanted[i] == Some(n) {
                        found[i] = Some(value);
                    }
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            n += 1;
        }
        Ok(found)
    }

    // Scalars hold no members.
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok([None; N])
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok([None; N])
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok([None; N])
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok([None; N])
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok([None; N])
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok([None; N])
    }
}

/// A member key, compared with the wanted segments where it lies.
struct Key<'k, const N: usize> {
    wanted: [Option<&'k str>; N],
}

impl<'de, const N: usize> DeserializeSeed<'de> for Key<'_, N> {
    type Value = [bool; N];
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<[bool; N], D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for Key<'_, N> {
    type Value = [bool; N];
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E>(self, key: &str) -> Result<[bool; N], E> {
        Ok(self.wanted.map(|w| w.is_some_and(|w| segment_matches(w, key))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn get(doc: &str, pointer: &str) -> Option<String> {
        lookup(doc.as_bytes(), [Some(pointer)]).expect("json")[0].map(|r| r.get().to_owned())
    }

    #[test]
    fn reads_what_serde_json_value_pointer_reads() {
        let doc =
            r#"{"id": "r-1", "a": {"b": [10, {"c": true}], "x/y": 1, "m~n": 2}, "s": 0.25, "e\u0073c": 3}"#;
        let value: serde_json::Value = serde_json::from_str(doc).unwrap();
        for pointer in
            ["/id", "/a/b/0", "/a/b/1/c", "/a/x~1y", "/a/m~0n", "/s", "/esc", "/nope", "/a/b/7", "/s/t"]
        {
            assert_eq!(
                get(doc, pointer).map(|t| serde_json::from_str::<serde_json::Value>(&t).unwrap()),
                value.pointer(pointer).cloned(),
                "{pointer}"
            );
        }
        let [a, b] = lookup(doc.as_bytes(), [Some("/id"), Some("/s")]).unwrap();
        assert_eq!((a.map(RawValue::get), b.map(RawValue::get)), (Some(r#""r-1""#), Some("0.25")));
        // Three at once (the label join's id, prediction and event time).
        let [a, b, c] = lookup(doc.as_bytes(), [Some("/s"), Some("/a/b/0"), Some("/nope")]).unwrap();
        assert_eq!(
            (a.map(RawValue::get), b.map(RawValue::get), c.map(RawValue::get)),
            (Some("0.25"), Some("10"), None)
        );
    }

    #[test]
    fn refuses_what_is_not_one_json_document() {
        for bad in [&b"{"[..], b"{} {}", b"{\"a\": }", b"\xff"] {
            assert!(lookup(bad, [Some("/a")]).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn agrees_with_value_pointer_on_generated_documents(
            keys in prop::collection::vec("[a-c~/]{1,2}", 1..5),
            nums in prop::collection::vec(-100i64..100, 1..5),
            pick in 0usize..5,
        ) {
            let members: Vec<String> = keys
                .iter()
                .zip(nums.iter().cycle())
                .map(|(k, n)| format!("{}: {{\"v\": {n}, \"l\": [{n}, \"{k}\"]}}", serde_json::to_string(k).unwrap()))
                .collect();
            let doc = format!("{{{}}}", members.join(", "));
            let value: serde_json::Value = serde_json::from_str(&doc).unwrap();
            let key = keys[pick % keys.len()].replace('~', "~0").replace('/', "~1");
            for pointer in [format!("/{key}/v"), format!("/{key}/l/1"), format!("/{key}")] {
                let got = get(&doc, &pointer).map(|t| serde_json::from_str::<serde_json::Value>(&t).unwrap());
                prop_assert_eq!(got, value.pointer(&pointer).cloned());
            }
        }
    }
}
