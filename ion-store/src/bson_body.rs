//! Lossless conversion between validated JSON document bodies and BSON, without Extended JSON.
//!
//! The driver's own `TryFrom<serde_json::Value>` reads Extended JSON (`{"$oid": …}` becomes an
//! ObjectId). Bodies cannot contain `$` keys, but this converter does not depend on that: it maps
//! JSON types one to one, so nothing in a body is ever interpreted.

use ion_core::{DocumentBody, Error, Result};
use mongodb::bson::{Bson, Document};
use serde_json::{Map, Number, Value};

/// A body as a BSON document. Integers become Int64, other numbers Double.
pub(crate) fn body_to_bson(body: &DocumentBody) -> Result<Document> {
    map_to_doc(body.as_map())
}

fn map_to_doc(map: &Map<String, Value>) -> Result<Document> {
    let mut doc = Document::new();
    for (k, v) in map {
        doc.insert(k.clone(), to_bson(v)?);
    }
    Ok(doc)
}

fn to_bson(v: &Value) -> Result<Bson> {
    Ok(match v {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Bson::Int64(i),
            (None, Some(_), _) => {
                return Err(Error::invalid_input(
                    "integers above 2^63-1 cannot be stored in mongodb",
                ))
            }
            (None, None, Some(f)) => Bson::Double(f),
            _ => return Err(Error::invalid_input("number is not representable in bson")),
        },
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(items) => Bson::Array(items.iter().map(to_bson).collect::<Result<_>>()?),
        Value::Object(map) => Bson::Document(map_to_doc(map)?),
    })
}

/// A stored BSON document back as a validated body.
pub(crate) fn bson_to_body(doc: &Document) -> Result<DocumentBody> {
    let value = Value::Object(doc_to_map(doc)?);
    DocumentBody::new(value)
        .map_err(|e| Error::unexpected(format!("stored document is not a valid body: {e}")))
}

fn doc_to_map(doc: &Document) -> Result<Map<String, Value>> {
    doc.iter()
        .map(|(k, v)| Ok((k.clone(), to_json(v)?)))
        .collect()
}

fn to_json(v: &Bson) -> Result<Value> {
    Ok(match v {
        Bson::Null => Value::Null,
        Bson::Boolean(b) => Value::Bool(*b),
        Bson::Int32(i) => Value::Number((*i).into()),
        Bson::Int64(i) => Value::Number((*i).into()),
        Bson::Double(f) => Value::Number(
            Number::from_f64(*f)
                .ok_or_else(|| Error::unexpected("stored document holds a non-finite number"))?,
        ),
        Bson::String(s) => Value::String(s.clone()),
        Bson::Array(items) => Value::Array(items.iter().map(to_json).collect::<Result<_>>()?),
        Bson::Document(d) => Value::Object(doc_to_map(d)?),
        other => {
            return Err(Error::unexpected(format!(
                "stored document holds a bson {:?} value, which bodies never contain",
                other.element_type()
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn dollar_looking_strings_stay_strings() {
        let body = DocumentBody::new(json!({"a": "$ne", "b": {"c": "$where"}, "n": 5})).unwrap();
        let doc = body_to_bson(&body).unwrap();
        assert_eq!(doc.get("a"), Some(&Bson::String("$ne".into())));
        assert_eq!(doc.get("n"), Some(&Bson::Int64(5)));
        assert_eq!(bson_to_body(&doc).unwrap(), body);
    }

    #[test]
    fn huge_unsigned_integers_are_refused() {
        let body = DocumentBody::new(json!({"a": u64::MAX})).unwrap();
        assert_eq!(
            body_to_bson(&body).unwrap_err().kind(),
            ion_core::ErrorKind::InvalidInput
        );
    }

    fn json_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| Value::Number(i.into())),
            (-1e9f64..1e9).prop_map(|f| json!(f)),
            "[a-z$. ]{0,8}".prop_map(Value::String),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        json_leaf().prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z][a-z0-9_]{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn bodies_round_trip(map in prop::collection::btree_map("[a-z][a-z0-9_]{0,6}", json_value(), 0..6)) {
            let body = DocumentBody::new(Value::Object(map.into_iter().collect())).unwrap();
            let back = bson_to_body(&body_to_bson(&body).unwrap()).unwrap();
            prop_assert_eq!(back, body);
        }
    }
}
