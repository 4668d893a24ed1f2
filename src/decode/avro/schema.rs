//! Avro schemas (the JSON form of the specification) parsed into an arena of nodes, with
//! named types resolved to node indexes (so recursive records are plain cycles of
//! indexes), and each node's smallest encoded size (which bounds how many items a
//! block may declare).

use serde_json::Value;
use std::collections::HashMap;

/// A logical type that changes how a number reads as an event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    None,
    Millis,
    Micros,
    Nanos,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Boolean,
    Int(TimeUnit),
    Long(TimeUnit),
    Float,
    Double,
    Bytes,
    String,
    Record { name: String, fields: Vec<(String, usize)> },
    Enum { name: String, symbols: Vec<String> },
    Array(usize),
    Map(usize),
    Union(Vec<usize>),
    Fixed { name: String, size: usize },
}

/// A parsed schema: `nodes[root]` is the top-level type.
#[derive(Debug, Clone)]
pub struct Schema {
    pub nodes: Vec<Node>,
    pub root: usize,
    /// Per node: whether a value of it can take zero bytes (null, an empty record,
    /// `fixed` of size 0...). Blocks of such items are bounded separately, since their
    /// item count does not consume input.
    pub empty_ok: Vec<bool>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid Avro schema: {0}")]
pub struct SchemaError(pub String);

/// Deepest nesting of a schema's JSON accepted.
const MAX_SCHEMA_DEPTH: usize = 64;

impl Schema {
    pub fn parse(text: &str) -> Result<Schema, SchemaError> {
        let value: Value = serde_json::from_str(text).map_err(|e| SchemaError(e.to_string()))?;
        let mut parser = Parser { nodes: Vec::new(), names: HashMap::new() };
        let root = parser.node(&value, "", 0)?;
        let empty_ok = zero_size(&parser.nodes);
        Ok(Schema { nodes: parser.nodes, root, empty_ok })
    }
}

struct Parser {
    nodes: Vec<Node>,
    names: HashMap<String, usize>,
}

fn err<T>(message: impl Into<String>) -> Result<T, SchemaError> {
    Err(SchemaError(message.into()))
}

impl Parser {
    fn push(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn fullname(name: &str, namespace: Option<&str>, enclosing: &str) -> String {
        if name.contains('.') {
            return name.to_owned();
        }
        match namespace.unwrap_or(enclosing) {
            "" => name.to_owned(),
            ns => format!("{ns}.{name}"),
        }
    }

    fn named(&mut self, name: &str, enclosing: &str) -> Result<usize, SchemaError> {
        let primitive = match name {
            "null" => Some(Node::Null),
            "boolean" => Some(Node::Boolean),
            "int" => Some(Node::Int(TimeUnit::None)),
            "long" => Some(Node::Long(TimeUnit::None)),
            "float" => Some(Node::Float),
            "double" => Some(Node::Double),
            "bytes" => Some(Node::Bytes),
            "string" => Some(Node::String),
            _ => None,
        };
        if let Some(node) = primitive {
            return Ok(self.push(node));
        }
        let full = Parser::fullname(name, None, enclosing);
        match self.names.get(&full).or_else(|| self.names.get(name)) {
            Some(&i) => Ok(i),
            None => err(format!("unknown type `{name}`")),
        }
    }

    fn define(&mut self, full: &str, index: usize) -> Result<(), SchemaError> {
        if self.names.insert(full.to_owned(), index).is_some() {
            return err(format!("type `{full}` is defined twice"));
        }
        Ok(())
    }

    fn node(&mut self, value: &Value, enclosing: &str, depth: usize) -> Result<usize, SchemaError> {
        if depth > MAX_SCHEMA_DEPTH {
            return err("nested too deeply");
        }
        match value {
            Value::String(name) => self.named(name, enclosing),
            Value::Array(branches) => {
                let mut out = Vec::with_capacity(branches.len());
                for b in branches {
                    out.push(self.node(b, enclosing, depth + 1)?);
                }
                if out.is_empty() {
                    return err("a union needs at least one branch");
                }
                Ok(self.push(Node::Union(out)))
            }
            Value::Object(map) => {
                let Some(Value::String(ty)) = map.get("type") else {
                    return match map.get("type") {
                        Some(inner @ (Value::Object(_) | Value::Array(_))) => {
                            self.node(inner, enclosing, depth + 1)
                        }
                        _ => err("a schema object needs a `type`"),
                    };
                };
                let logical = map.get("logicalType").and_then(Value::as_str);
                let unit = match logical {
                    Some("timestamp-millis" | "local-timestamp-millis") => TimeUnit::Millis,
                    Some("timestamp-micros" | "local-timestamp-micros") => TimeUnit::Micros,
                    Some("timestamp-nanos" | "local-timestamp-nanos") => TimeUnit::Nanos,
                    _ => TimeUnit::None,
                };
                let name_of = |map: &serde_json::Map<String, Value>| -> Result<String, SchemaError> {
                    let Some(Value::String(name)) = map.get("name") else {
                        return err(format!("a `{ty}` needs a `name`"));
                    };
                    let namespace = map.get("namespace").and_then(Value::as_str);
                    Ok(Parser::fullname(name, namespace, enclosing))
                };
                match ty.as_str() {
                    "int" => Ok(self.push(Node::Int(unit))),
                    "long" => Ok(self.push(Node::Long(unit))),
                    "record" | "error" => {
                        let full = name_of(map)?;
                        let index = self.push(Node::Record { name: full.clone(), fields: Vec::new() });
                        self.define(&full, index)?;
                        let namespace = full.rsplit_once('.').map_or("", |(ns, _)| ns).to_owned();
                        let Some(Value::Array(fields)) = map.get("fields") else {
                            return err(format!("record `{full}` needs `fields`"));
                        };
                        let mut out = Vec::with_capacity(fields.len());
                        for f in fields {
                            let (Some(Value::String(name)), Some(ty)) = (f.get("name"), f.get("type")) else {
                                return err(format!("a field of `{full}` needs a `name` and a `type`"));
                            };
                            out.push((name.clone(), self.node(ty, &namespace, depth + 1)?));
                        }
                        self.nodes[index] = Node::Record { name: full, fields: out };
                        Ok(index)
                    }
                    "enum" => {
                        let full = name_of(map)?;
                        let Some(Value::Array(symbols)) = map.get("symbols") else {
                            return err(format!("enum `{full}` needs `symbols`"));
                        };
                        let symbols: Option<Vec<String>> =
                            symbols.iter().map(|s| s.as_str().map(str::to_owned)).collect();
                        let Some(symbols) = symbols else {
                            return err(format!("enum `{full}`: symbols are text"));
                        };
                        let index = self.push(Node::Enum { name: full.clone(), symbols });
                        self.define(&full, index)?;
                        Ok(index)
                    }
                    "fixed" => {
                        let full = name_of(map)?;
                        let Some(size) = map.get("size").and_then(Value::as_u64) else {
                            return err(format!("fixed `{full}` needs a `size`"));
                        };
                        let size =
                            usize::try_from(size).map_err(|_| SchemaError("fixed size too large".into()))?;
                        let index = self.push(Node::Fixed { name: full.clone(), size });
                        self.define(&full, index)?;
                        Ok(index)
                    }
                    "array" => {
                        let Some(items) = map.get("items") else { return err("an array needs `items`") };
                        let items = self.node(items, enclosing, depth + 1)?;
                        Ok(self.push(Node::Array(items)))
                    }
                    "map" => {
                        let Some(values) = map.get("values") else { return err("a map needs `values`") };
                        let values = self.node(values, enclosing, depth + 1)?;
                        Ok(self.push(Node::Map(values)))
                    }
                    other => self.named(other, enclosing),
                }
            }
            _ => err("a schema is a name, an object or a union array"),
        }
    }
}

/// Which nodes can encode in zero bytes, by fixed point (records may be recursive).
fn zero_size(nodes: &[Node]) -> Vec<bool> {
    let mut zero: Vec<bool> = nodes
        .iter()
        .map(|n| matches!(n, Node::Null | Node::Record { .. } | Node::Fixed { size: 0, .. }))
        .collect();
    // Records start optimistic and lose the flag until nothing changes.
    loop {
        let mut changed = false;
        for (i, n) in nodes.iter().enumerate() {
            if let Node::Record { fields, .. } = n
                && zero[i]
                && fields.iter().any(|&(_, t)| !zero[t])
            {
                zero[i] = false;
                changed = true;
            }
        }
        if !changed {
            return zero;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_enums_unions_and_references() {
        let s = Schema::parse(
            r#"{"type":"record","name":"R","namespace":"ns","fields":[
                {"name":"a","type":"long"},
                {"name":"e","type":{"type":"enum","name":"E","symbols":["X","Y"]}},
                {"name":"e2","type":["null","ns.E"]},
                {"name":"next","type":["null","R"]},
                {"name":"t","type":{"type":"long","logicalType":"timestamp-micros"}}]}"#,
        )
        .unwrap();
        let Node::Record { name, fields } = &s.nodes[s.root] else { panic!() };
        assert_eq!(name, "ns.R");
        assert_eq!(fields.len(), 5);
        let Node::Union(b) = &s.nodes[fields[3].1] else { panic!() };
        assert_eq!(b[1], s.root, "recursive reference resolves to the record");
        assert_eq!(s.nodes[fields[4].1], Node::Long(TimeUnit::Micros));
        assert!(!s.empty_ok[s.root]);
    }

    #[test]
    fn bad_schemas_are_errors() {
        for bad in ["", "{}", r#"{"type":"record","name":"R"}"#, r#""Nope""#, "[]", "1"] {
            assert!(Schema::parse(bad).is_err(), "{bad}");
        }
        let mut deep = String::new();
        for _ in 0..200 {
            deep.push_str(r#"{"type":"array","items":"#);
        }
        deep.push_str("\"int\"");
        deep.push_str(&"}".repeat(200));
        assert!(Schema::parse(&deep).is_err());
    }
}
