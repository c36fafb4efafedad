//! Request signing as the CompShare (UCloud) gateway verifies it.
//!
//! The gateway sees only flat `name=value` strings, so one encoder produces both the string that is
//! signed and the body that is sent: a client that signs `true` but sends `True` is rejected with
//! RetCode 171.

use std::collections::BTreeMap;

use serde_json::Value;
use sha1::{Digest, Sha1};

/// Request parameters as the gateway receives them: flat names, string values, sorted by name in
/// plain byte order (so `UHostIds.10` sorts before `UHostIds.2`, as the gateway expects).
pub type Params = BTreeMap<String, String>;

/// Name of the parameter that carries the signature; it is not part of the signed input.
pub const SIGNATURE: &str = "Signature";
/// Name of the parameter that carries the public key; it is part of the signed input.
pub const PUBLIC_KEY: &str = "PublicKey";

/// Flattens a JSON object of request parameters into gateway parameters.
///
/// Booleans become `true`/`false`, integral numbers drop any fraction (`42.0` → `42`), other
/// numbers never use scientific notation, arrays become `Name.0`, `Name.1`, … (objects inside them
/// `Name.0.Field`), and `null` is omitted.
pub fn flatten(params: &serde_json::Map<String, Value>) -> Params {
    let mut out = Params::new();
    for (name, value) in params {
        flatten_into(&mut out, name.clone(), value);
    }
    out
}

fn flatten_into(out: &mut Params, name: String, value: &Value) {
    match value {
        Value::Null => {}
        Value::Bool(b) => {
            out.insert(name, b.to_string());
        }
        Value::Number(n) => {
            out.insert(name, number_to_param(n));
        }
        Value::String(s) => {
            out.insert(name, s.clone());
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten_into(out, format!("{name}.{i}"), item);
            }
        }
        Value::Object(fields) => {
            for (field, item) in fields {
                flatten_into(out, format!("{name}.{field}"), item);
            }
        }
    }
}

fn number_to_param(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    // `Display` for f64 never uses an exponent and prints integral values without a fraction,
    // which is exactly the gateway's rule.
    n.as_f64().map(|f| f.to_string()).unwrap_or_default()
}

/// Computes the signature of `params` (which must already contain `PublicKey` when the request
/// carries one, and must not contain `Signature`): lowercase hex SHA-1 of every name and value
/// concatenated in sorted order, followed by the private key.
pub fn signature(params: &Params, private_key: &str) -> String {
    let mut hasher = Sha1::new();
    for (name, value) in params {
        if name == SIGNATURE {
            continue;
        }
        hasher.update(name.as_bytes());
        hasher.update(value.as_bytes());
    }
    hasher.update(private_key.as_bytes());
    hex::encode(hasher.finalize())
}

/// Adds `PublicKey` and `Signature` to `params`, ready to send.
pub fn sign(params: &mut Params, public_key: &str, private_key: &str) {
    params.insert(PUBLIC_KEY.to_owned(), public_key.to_owned());
    let signature = signature(params, private_key);
    params.insert(SIGNATURE.to_owned(), signature);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const VENDOR_PUBLIC: &str = "ucloudsomeone@example.com1296235120854146120";
    const VENDOR_PRIVATE: &str = "46f09bb9fab4f12dfc160dae12273d5332b5debe";

    fn params(value: Value) -> Params {
        flatten(value.as_object().expect("test parameters are an object"))
    }

    fn signed(value: Value, public: &str, private: &str) -> String {
        let mut p = params(value);
        sign(&mut p, public, private);
        p[SIGNATURE].clone()
    }

    #[test]
    fn vector_1_vendor_documentation_example() {
        let sig = signed(
            json!({"Action": "DescribeUHostInstance", "Region": "cn-bj2", "Limit": 10}),
            VENDOR_PUBLIC,
            VENDOR_PRIVATE,
        );
        assert_eq!(sig, "cba5cf5ec4d4233d206b1b54951e3787350a642f");
    }

    #[test]
    fn vector_2_sdk_unit_test_in_any_input_order() {
        let sig = signed(
            json!({
                "Zone": "cn-bj2-04", "Region": "cn-bj2", "Quantity": 1, "Password": "VUNsb3VkLmNu",
                "Name": "Host01", "Memory": 2048, "LoginMode": "Password",
                "ImageId": "f43736e1-65a5-4bea-ad2e-8a46e18883c2", "DiskSpace": 10,
                "ChargeType": "Month", "CPU": 2, "Action": "CreateUHostInstance",
            }),
            VENDOR_PUBLIC,
            VENDOR_PRIVATE,
        );
        assert_eq!(sig, "4f9ef5df2abab2c6fccd1e9515cb7e2df8c6bb65");
    }

    #[test]
    fn vector_3_array_indexes_sort_as_text() {
        let backends: Vec<Value> = (0..12)
            .map(|i| match i % 3 {
                0 => json!("foo"),
                1 => json!("bar"),
                _ => json!(42),
            })
            .collect();
        let p = params(json!({"Action": "AllocateBackendBatch", "Backends": backends}));
        let names: Vec<&str> = p.keys().map(String::as_str).collect();
        assert_eq!(
            &names[..4],
            ["Action", "Backends.0", "Backends.1", "Backends.10"]
        );
        let sig = signed(
            json!({"Action": "AllocateBackendBatch", "Backends": backends}),
            VENDOR_PUBLIC,
            VENDOR_PRIVATE,
        );
        assert_eq!(sig, "6bc32642779f8cb0bb3d3f128b1c0688abf9a1a3");
    }

    #[test]
    fn vector_4_with_and_without_public_key() {
        let without = signature(&params(json!({"foo": "bar"})), "my_private_key");
        assert_eq!(without, "634edc1bb957c0d65e5ab5494cf3b7784fbc87af");
        let with = signed(json!({"foo": "bar"}), "my_public_key", "my_private_key");
        assert_eq!(with, "d4411ab30953fb0bbcb1e7313081f05e4e91a394");
    }

    #[test]
    fn vector_5_describe_compshare_instance() {
        let sig = signed(
            json!({
                "Action": "DescribeCompShareInstance", "Region": "cn-wlcb", "Limit": 20,
                "Offset": 0, "UHostIds": ["uhost-aaaa", "uhost-bbbb"], "WithoutGpu": false,
            }),
            "my_public_key",
            "my_private_key",
        );
        assert_eq!(sig, "b4b49edf62ebd7a0dbf10810032ec8b4c9a42c4e");
    }

    #[test]
    fn signature_parameter_is_never_signed() {
        let mut p = params(json!({"foo": "bar"}));
        sign(&mut p, "my_public_key", "my_private_key");
        assert_eq!(signature(&p, "my_private_key"), p[SIGNATURE]);
    }

    #[test]
    fn flattens_bools_numbers_arrays_objects_and_nulls() {
        let p = params(json!({
            "Yes": true, "No": false, "Int": -7, "Big": 18446744073709551615u64,
            "Integral": 42.0, "Fraction": 0.5, "Tiny": 0.0000001, "Huge": 1e21,
            "Ids": ["a", "b"], "Disks": [{"Size": 40, "Type": "SSD"}], "Nothing": null,
            "Empty": [],
        }));
        let expected: Params = [
            ("Big", "18446744073709551615"),
            ("Disks.0.Size", "40"),
            ("Disks.0.Type", "SSD"),
            ("Fraction", "0.5"),
            ("Huge", "1000000000000000000000"),
            ("Ids.0", "a"),
            ("Ids.1", "b"),
            ("Int", "-7"),
            ("Integral", "42"),
            ("No", "false"),
            ("Tiny", "0.0000001"),
            ("Yes", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(p, expected);
    }

    #[test]
    fn names_sort_by_plain_byte_order() {
        let p = params(json!({"ChargeType": "Month", "CPU": 2, "action": "x", "Action": "y"}));
        let names: Vec<&str> = p.keys().map(String::as_str).collect();
        assert_eq!(names, ["Action", "CPU", "ChargeType", "action"]);
    }
}
