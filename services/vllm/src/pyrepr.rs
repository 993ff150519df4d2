//! JSON values written as Python literals, the way Python's `str()` prints them.
//!
//! LiteLLM stores every non-primitive span attribute as `str(value)`, and upstream's
//! `LlmProxyTraceToTriplet` reads them back with `ast.literal_eval`. A JSON dump would not
//! do: `null`, `true` and `false` are not Python literals. So dicts and lists go out as
//! `{'key': None, 'ok': True}` and `[1, 2, 3]`, strings quoted and escaped as `repr()` does.

use serde_json::Value;

/// `str(value)` of the Python object that `json.loads` would have made of `value`.
pub fn repr(value: &Value) -> String {
    let mut out = String::new();
    write(&mut out, value);
    out
}

/// Appends the Python literal of `value` to `out`.
pub fn write(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(out, key);
                out.push_str(": ");
                write(out, item);
            }
            out.push('}');
        }
    }
}

fn write_number(out: &mut String, n: &serde_json::Number) {
    if let Some(i) = n.as_i64() {
        out.push_str(&i.to_string());
    } else if let Some(u) = n.as_u64() {
        out.push_str(&u.to_string());
    } else if let Some(f) = n.as_f64() {
        // Debug always keeps a float a float ("1.0", "1e-7"), as Python's repr does;
        // JSON cannot carry NaN or infinities, so every value here is a valid literal.
        out.push_str(&format!("{f:?}"));
    }
}

/// A string literal as `repr()` writes it: single quotes unless the text holds a single
/// quote and no double quote; backslash escapes for the quote, backslashes, control and
/// invisible characters; everything printable kept as is.
pub fn write_str(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !printable(c) => {
                let code = u32::from(c);
                if code <= 0xff {
                    out.push_str(&format!("\\x{code:02x}"));
                } else if code <= 0xffff {
                    out.push_str(&format!("\\u{code:04x}"));
                } else {
                    out.push_str(&format!("\\U{code:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Close to Python's `str.isprintable()`: controls, separators other than the space,
/// format characters and private use are escaped. (An exact match would need the Unicode
/// database; a character kept raw still round-trips through `literal_eval`.)
fn printable(c: char) -> bool {
    let code = u32::from(c);
    if c.is_control() {
        return false;
    }
    !matches!(
        code,
        0xa0 | 0xad
            | 0x600..=0x605
            | 0x61c
            | 0x6dd
            | 0x70f
            | 0x1680
            | 0x180e
            | 0x2000..=0x200f
            | 0x2028..=0x202f
            | 0x205f..=0x206f
            | 0x3000
            | 0xd800..=0xf8ff
            | 0xfeff
            | 0xfff9..=0xfffb
            | 0xe0001
            | 0xe0020..=0xe007f
            | 0xf0000..
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_follow_python() {
        assert_eq!(repr(&json!(null)), "None");
        assert_eq!(repr(&json!(true)), "True");
        assert_eq!(repr(&json!(false)), "False");
        assert_eq!(repr(&json!(42)), "42");
        assert_eq!(repr(&json!(-7)), "-7");
        assert_eq!(repr(&json!(u64::MAX)), "18446744073709551615");
        assert_eq!(repr(&json!(0.7)), "0.7");
        assert_eq!(repr(&json!(1.0)), "1.0");
        assert_eq!(repr(&json!(1e-7)), "1e-7");
    }

    #[test]
    fn strings_are_quoted_like_repr() {
        assert_eq!(repr(&json!("abc")), "'abc'");
        assert_eq!(repr(&json!("it's")), "\"it's\"");
        assert_eq!(repr(&json!("say \"hi\"")), "'say \"hi\"'");
        assert_eq!(repr(&json!("both ' and \"")), "'both \\' and \"'");
        assert_eq!(repr(&json!("a\\b\nc\td\re")), "'a\\\\b\\nc\\td\\re'");
        assert_eq!(repr(&json!("\u{0}\u{7f}")), "'\\x00\\x7f'");
        assert_eq!(repr(&json!("héllo 世界 😀")), "'héllo 世界 😀'");
        assert_eq!(
            repr(&json!("\u{a0}\u{2028}\u{feff}")),
            "'\\xa0\\u2028\\ufeff'"
        );
    }

    #[test]
    fn containers_keep_their_order() {
        let value = json!({"id": "x", "choices": [{"token_ids": [1, 2], "logprobs": null, "ok": true}], "n": []});
        assert_eq!(
            repr(&value),
            "{'id': 'x', 'choices': [{'token_ids': [1, 2], 'logprobs': None, 'ok': True}], 'n': []}"
        );
        assert_eq!(repr(&json!([[1, 2], [3]])), "[[1, 2], [3]]");
        assert_eq!(repr(&json!({})), "{}");
    }
}
