//! Reading one JSON object field by field, leniently where the API's types vary between answers
//! (numbers sent as strings, `null` for empty lists, empty strings for absent numbers) and without
//! letting one field of an unexpected shape spoil the rest: such a field reads as absent, and its
//! name is recorded so that the caller can say what it left out.

use compact_str::{CompactString, ToCompactString};
use serde_json::{Map, Value};

/// The fields of one JSON object, read one at a time.
pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
    /// Fields present with a shape their reader could not use, in the order read.
    pub dropped: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(map: &'a Map<String, Value>) -> Self {
        Fields {
            map,
            dropped: Vec::new(),
        }
    }

    /// The field's value, unless it is absent or `null`.
    pub(crate) fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    /// Applies `read` to the field; a value it cannot use is dropped and recorded.
    fn read<T>(&mut self, name: &'static str, read: impl FnOnce(&Value) -> Option<T>) -> Option<T> {
        let value = self.get(name)?;
        let read = read(value);
        if read.is_none() {
            self.dropped.push(name);
        }
        read
    }

    /// A string, or a number/bool written as text; empty when absent or unreadable.
    pub(crate) fn string(&mut self, name: &'static str) -> CompactString {
        self.read(name, string).unwrap_or_default()
    }

    /// An integer, or a numeric string; integral floats count and fractions are truncated (a
    /// fractional count is better shown than lost). An empty string is absent.
    pub(crate) fn int(&mut self, name: &'static str) -> Option<i64> {
        self.read(name, int).flatten()
    }

    /// A number, or a numeric string. An empty string is absent.
    pub(crate) fn float(&mut self, name: &'static str) -> Option<f64> {
        self.read(name, float).flatten()
    }

    /// A bool, or `"true"`/`"false"`/`"Yes"`/`"No"`/`1`/`0`.
    pub(crate) fn bool(&mut self, name: &'static str) -> Option<bool> {
        self.read(name, bool)
    }

    /// An object read by `read`. Anything dropped inside it is recorded under this field's name.
    pub(crate) fn object<T>(
        &mut self,
        name: &'static str,
        read: impl FnOnce(&mut Fields<'_>) -> T,
    ) -> Option<T> {
        let mut complete = true;
        let object = self.read(name, |v| {
            let mut inner = Fields::new(v.as_object()?);
            let object = read(&mut inner);
            complete = inner.dropped.is_empty();
            Some(object)
        });
        if !complete {
            self.dropped.push(name);
        }
        object
    }

    /// A list of strings (numbers written as text count); `null` is empty. An element of another
    /// shape is left out, and the field recorded as dropped.
    pub(crate) fn list_of_strings(&mut self, name: &'static str) -> Vec<String> {
        let Some(value) = self.get(name) else {
            return Vec::new();
        };
        let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
        let read: Vec<String> = items.iter().filter_map(string).map(String::from).collect();
        if !value.is_array() || read.len() != items.len() {
            self.dropped.push(name);
        }
        read
    }

    /// A list of objects, each read by `read`; `null` is empty. A list with an element that is
    /// not an object keeps its other elements; either, or anything dropped inside an element, is
    /// recorded under this field's name.
    pub(crate) fn list<T>(
        &mut self,
        name: &'static str,
        read: impl Fn(&mut Fields<'_>) -> T,
    ) -> Vec<T> {
        let Some(value) = self.get(name) else {
            return Vec::new();
        };
        let Some(items) = value.as_array() else {
            self.dropped.push(name);
            return Vec::new();
        };
        let mut complete = true;
        let read: Vec<T> = items
            .iter()
            .filter_map(|item| {
                let mut inner = Fields::new(item.as_object()?);
                let element = read(&mut inner);
                complete &= inner.dropped.is_empty();
                Some(element)
            })
            .collect();
        if !complete || read.len() != items.len() {
            self.dropped.push(name);
        }
        read
    }
}

/// A string, or a number/bool written as text.
pub(crate) fn string(value: &Value) -> Option<CompactString> {
    match value {
        Value::String(s) => Some(s.into()),
        Value::Number(n) => Some(n.to_compact_string()),
        Value::Bool(b) => Some(b.to_compact_string()),
        _ => None,
    }
}

/// An integer, or a numeric string (`Some(None)`: an empty string, meaning absent).
pub(crate) fn int(value: &Value) -> Option<Option<i64>> {
    // i64 covers every value the API sends (counts, MiB, Unix seconds).
    float(value).map(|f| f.filter(|f| f.abs() < 9.0e15).map(|f| f.trunc() as i64))
}

/// A number, or a numeric string (`Some(None)`: an empty string, meaning absent).
pub(crate) fn float(value: &Value) -> Option<Option<f64>> {
    match value {
        Value::Number(n) => Some(n.as_f64().filter(|f| f.is_finite())),
        Value::String(s) if s.trim().is_empty() => Some(None),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Some),
        _ => None,
    }
}

/// A bool, or `"true"`/`"false"`/`"Yes"`/`"No"`/`1`/`0`.
pub(crate) fn bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Some(true),
            "false" | "no" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(value: &Value) -> Fields<'_> {
        Fields::new(value.as_object().unwrap())
    }

    #[test]
    fn numbers_strings_and_nulls_are_read_leniently() {
        let v = json!({
            "n": "32768", "f": 2.0, "e": "", "s": 42, "b": "Yes", "z": null, "x": "1e3",
        });
        let mut f = fields(&v);
        assert_eq!(f.int("n"), Some(32768));
        assert_eq!(f.int("f"), Some(2));
        assert_eq!(f.int("e"), None);
        assert_eq!(f.string("s"), "42");
        assert_eq!(f.bool("b"), Some(true));
        assert_eq!(f.int("z"), None);
        assert_eq!(f.string("missing"), "");
        assert_eq!(f.float("x"), Some(1000.0));
        assert!(f.dropped.is_empty(), "{:?}", f.dropped);
    }

    #[test]
    fn a_field_of_an_unexpected_shape_is_dropped_and_named() {
        let v = json!({
            "Name": {"nested": true}, "CPU": [1], "IsSpot": "maybe", "Memory": "lots",
            "Softwares": ["JupyterLab"], "IPSet": [{"IP": "1.2.3.4"}, 7], "GraphicsMemory": 24,
        });
        let mut f = fields(&v);
        assert_eq!(f.string("Name"), "");
        assert_eq!(f.int("CPU"), None);
        assert_eq!(f.bool("IsSpot"), None);
        assert_eq!(f.int("Memory"), None);
        assert!(f.list("Softwares", |s| s.string("Name")).is_empty());
        assert_eq!(f.list("IPSet", |s| s.string("IP")), ["1.2.3.4"]);
        assert_eq!(f.object("GraphicsMemory", |g| g.float("Value")), None);
        let nested = json!({"IPSet": [{"IP": {"v4": "1.2.3.4"}, "Type": "Bgp"}]});
        let mut n = fields(&nested);
        let read = n.list("IPSet", |ip| (ip.string("IP"), ip.string("Type")));
        assert_eq!(read, [("".into(), "Bgp".into())]);
        assert_eq!(n.dropped, ["IPSet"]);
        assert_eq!(
            f.dropped,
            [
                "Name",
                "CPU",
                "IsSpot",
                "Memory",
                "Softwares",
                "IPSet",
                "GraphicsMemory"
            ]
        );
    }
}
