//! Object metadata rules: names, uids, timestamps, generated names.

use rand::Rng;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// DNS-1123 subdomain: lowercase alphanumerics, '-' and '.', starting and ending
/// alphanumeric, at most 253 characters.
pub fn check_subdomain(name: &str) -> Result<(), &'static str> {
    const WHY: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    if name.is_empty() || name.len() > 253 {
        return Err(WHY);
    }
    for label in name.split('.') {
        check_label_chars(label).map_err(|_| WHY)?;
    }
    Ok(())
}

/// DNS-1123 label: at most 63 characters of lowercase alphanumerics and '-'.
pub fn check_label(name: &str) -> Result<(), &'static str> {
    const WHY: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
    if name.len() > 63 {
        return Err(WHY);
    }
    check_label_chars(name).map_err(|_| WHY)
}

fn check_label_chars(label: &str) -> Result<(), ()> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !label.is_empty()
        && label.chars().all(ok_char)
        && edge(label.chars().next())
        && edge(label.chars().last())
    {
        Ok(())
    } else {
        Err(())
    }
}

/// A random UUID v4.
pub fn new_uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// RFC 3339 in whole seconds, UTC: `2026-11-24T07:26:35Z`.
pub fn now_rfc3339() -> String {
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
    now.format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// `prefix` cut to 58 characters plus 5 random characters, as kube-apiserver does.
pub fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    let cut: String = prefix.chars().take(58).collect();
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{cut}{suffix}")
}

/// kubectl's HumanDuration of the time since an RFC 3339 timestamp.
pub fn age(created: &str) -> String {
    let Ok(t) = OffsetDateTime::parse(created, &Rfc3339) else {
        return "<unknown>".into();
    };
    let secs = (OffsetDateTime::now_utc() - t).whole_seconds().max(0);
    human_duration(secs)
}

pub fn human_duration(secs: i64) -> String {
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        let s = secs % 60;
        if s == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{s}s")
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        let mm = m % 60;
        if mm == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{mm}m")
        }
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        let hh = h % 24;
        if hh == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{hh}h")
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

/// `metadata` of an object, created if missing.
pub fn metadata_mut(obj: &mut Map<String, Value>) -> &mut Map<String, Value> {
    if !matches!(obj.get("metadata"), Some(Value::Object(_))) {
        obj.insert("metadata".into(), Value::Object(Map::new()));
    }
    #[allow(clippy::expect_used)] // made an object just above
    obj.get_mut("metadata")
        .and_then(Value::as_object_mut)
        .expect("metadata is an object")
}

pub fn meta_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "a-b", "a.b-c", "x1", "1x"] {
            assert!(check_subdomain(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "-a",
            "a-",
            "a..b",
            "a_b",
            "a/b",
            "..",
            &"a".repeat(254),
        ] {
            assert!(check_subdomain(bad).is_err(), "{bad}");
        }
        assert!(check_label("kube-system").is_ok());
        assert!(check_label("a.b").is_err());
        assert!(check_label(&"a".repeat(64)).is_err());
    }

    #[test]
    fn uid_and_generated_names() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        let n = generate_name("web-");
        assert!(n.starts_with("web-") && n.len() == 9);
        assert!(check_subdomain(&n).is_ok());
    }

    #[test]
    fn human_durations_match_kubectl() {
        let cases = [
            (45, "45s"),
            (310, "5m10s"),
            (600, "10m"),
            (95 * 60, "95m"),
            (5 * 3600 + 180, "5h3m"),
            (30 * 3600, "30h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (45 * 86400, "45d"),
        ];
        for (s, want) in cases {
            assert_eq!(human_duration(s), want, "{s}");
        }
    }
}
