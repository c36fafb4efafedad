//! Lenient readers for API fields whose JSON type varies between answers: numbers sent as strings
//! (`"65536"`), strings sent as numbers, `null` for empty lists, and empty strings for absent numbers.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A string, or a number/bool written as text; `null` is empty.
pub fn string<'de, D: Deserializer<'de>, S: From<String> + Default>(d: D) -> Result<S, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s.into(),
        Value::Number(n) => n.to_string().into(),
        Value::Bool(b) => b.to_string().into(),
        _ => S::default(),
    })
}

/// An integer, or a numeric string; empty strings and `null` are absent. Integral floats count.
pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(opt_f64_value(Value::deserialize(d)?).and_then(|f| {
        // i64 covers every value the API sends (counts, MiB, Unix seconds); fractions are dropped
        // rather than rejected because a fractional count is still better shown than lost.
        (f.is_finite() && f.abs() < 9.0e15).then_some(f.trunc() as i64)
    }))
}

/// A number, or a numeric string; empty strings and `null` are absent.
pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(opt_f64_value(Value::deserialize(d)?))
}

fn opt_f64_value(v: Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

/// A bool, or `"true"`/`"false"`/`"Yes"`/`"No"`/`1`/`0`.
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => Some(b),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Some(true),
            "false" | "no" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    })
}

/// A list; `null` is empty.
pub fn seq<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// The envelope's `RetCode`: a number or a quoted number.
pub fn ret_code<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    opt_i64(d)
}
