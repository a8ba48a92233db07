//! The JSON log line: one object per event, its fields typed as a log
//! pipeline (Loki, Elasticsearch, jq) expects (#20).
//!
//! `tracing-subscriber`'s own JSON format writes a field recorded with `?`
//! as the text of its `Debug`, so `user = ?user` became `"user":"\"alice\""`
//! (quoted twice). Events keep `?` for strings because it makes the human
//! line injection-safe; this formatter undoes that quoting instead, for every
//! event whatever its source: a `Debug` that is one Rust string literal is
//! written as that string. Integers and booleans are JSON numbers and
//! booleans, floats numbers (a non-finite one a string), anything else a
//! string. JSON string escaping keeps each event on one line.
//!
//! Layout, as before: `timestamp` (RFC 3339, microseconds), `level`, the
//! event's fields in order (`message` first when there is one), `target`.

use std::fmt::{self, Write as _};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The JSON event format ([module docs](self)).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = String::with_capacity(256);
        line.push_str("{\"timestamp\":");
        push_str(
            &mut line,
            &humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
        );
        line.push_str(",\"level\":");
        push_str(&mut line, meta.level().as_str());
        event.record(&mut Fields { line: &mut line });
        line.push_str(",\"target\":");
        push_str(&mut line, meta.target());
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

/// Appends `,"name":value` for each field of the event.
struct Fields<'a> {
    line: &'a mut String,
}

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        self.line.push(',');
        push_str(self.line, field.name());
        self.line.push(':');
    }

    fn raw(&mut self, field: &Field, value: impl fmt::Display) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }
}

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        self.key(field);
        match unquote(&text) {
            Some(s) => push_str(self.line, &s),
            None => push_str(self.line, &text),
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_str(self.line, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.key(field);
        push_str(self.line, &value.to_string());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.raw(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.raw(field, value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.raw(field, value);
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.raw(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        match serde_json::Number::from_f64(value) {
            Some(n) => {
                let _ = write!(self.line, "{n}");
            }
            None => push_str(self.line, &value.to_string()),
        }
    }
}

/// Appends `s` as a JSON string.
fn push_str(line: &mut String, s: &str) {
    match serde_json::to_string(s) {
        Ok(quoted) => line.push_str(&quoted),
        Err(_) => line.push_str("\"-\""),
    }
}

/// The string whose `Debug` is `text`, when `text` is exactly one Rust
/// string literal as `<str as Debug>` writes it; `None` otherwise.
pub fn unquote(text: &str) -> Option<String> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        let c = match c {
            '"' => return None,
            '\\' => match chars.next()? {
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                '0' => '\0',
                '\\' => '\\',
                '"' => '"',
                '\'' => '\'',
                'u' => {
                    if chars.next()? != '{' {
                        return None;
                    }
                    let mut hex = String::new();
                    loop {
                        match chars.next()? {
                            '}' => break,
                            h if h.is_ascii_hexdigit() && hex.len() < 6 => hex.push(h),
                            _ => return None,
                        }
                    }
                    char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?
                }
                _ => return None,
            },
            c => c,
        };
        out.push(c);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::capture::Captured;

    #[test]
    fn every_debug_string_unquotes_to_itself() {
        for s in [
            "alice",
            "",
            "a \"quoted\" name",
            "back\\slash",
            "new\nline\r\t\0",
            "bell\u{7}del\u{7f}c1\u{85}",
            "ünïcødé ✓ \u{301}combining",
            "it's",
            "\u{200b}zero-width \u{feff}",
        ] {
            assert_eq!(unquote(&format!("{s:?}")).as_deref(), Some(s), "{s:?}");
        }
    }

    #[test]
    fn other_debug_text_is_not_a_string() {
        for text in [
            "Some(\"x\")",
            "\"a\" \"b\"",
            "\"unterminated",
            "\"bad \\q escape\"",
            "\"\\u{110000}\"",
            "42",
            "\"",
        ] {
            assert_eq!(unquote(text), None, "{text}");
        }
    }

    fn capture(f: impl FnOnce()) -> String {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        captured.text()
    }

    #[test]
    fn fields_keep_their_types() {
        let user = "al\"ice\nX";
        let line = capture(|| {
            tracing::warn!(
                target: "passgate::audit",
                event = "auth_failed",
                user = ?user,
                id = %"AAAAAAAAAAAA",
                retry_after_s = 7u64,
                delta = -3i64,
                ms = 1.25f64,
                complete = true,
                "a message {}", 1
            );
        });
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["target"], "passgate::audit");
        assert_eq!(v["message"], "a message 1");
        assert_eq!(v["event"], "auth_failed");
        assert_eq!(v["user"], user);
        assert_eq!(v["id"], "AAAAAAAAAAAA");
        assert_eq!(v["retry_after_s"], 7);
        assert_eq!(v["delta"], -3);
        assert_eq!(v["ms"], 1.25);
        assert_eq!(v["complete"], true);
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(line.starts_with("{\"timestamp\":"), "{line}");
        assert!(
            line.ends_with(",\"target\":\"passgate::audit\"}\n"),
            "{line}"
        );
    }
}
