//! Java `.properties` syntax, as `spark-defaults.conf` is read: `java.util.Properties.load`
//! (Java 17) over the file decoded as UTF-8, then each value trimmed by Spark's
//! `Utils.getPropertiesFromFile` (`trimExceptCRLF`, [`spark_trim`]).
//!
//! The rules that parsers commonly get wrong, all as Java has them:
//! - a line ends at `\n`, at `\r` alone, or at `\r\n`; no other character (not U+0085, U+2028)
//!   ends one;
//! - white space is only space, `\t` and `\f`: not `\v`, not U+00A0 or any other Unicode space;
//! - a line ending in an odd number of backslashes continues on the next, whose leading white
//!   space is skipped; an even number is that many halves of `\\` escapes;
//! - `#` or `!` starts a comment only as the first character of a line after white space
//!   (also on a line that a continuation led into when nothing came before it); a comment
//!   never continues;
//! - the key ends at the first unescaped `=`, `:` or white space; white space, then at most one
//!   `=` or `:`, then white space separate it from the value;
//! - `\t`, `\n`, `\r`, `\f` and `\uXXXX` (exactly four hex digits within the key or the value)
//!   are escapes, any other escaped character is itself; a malformed `\u` is Java's
//!   `IllegalArgumentException: Malformed \uxxxx encoding.`, here [`PropertiesError`].
//!
//! `tests/data/java_properties_cases.txt` holds Java's own answers for several hundred inputs
//! (`scripts/java/regen-properties-cases.sh`); `tests/java_properties.rs` checks every one.

/// What Java refuses in a properties file (and one thing spillway cannot represent). `line` is
/// the 1-based physical line of the offending escape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertiesError {
    /// `\u` not followed by four hex digits within its key or value: Java's
    /// `IllegalArgumentException` from `Properties.load`, which fails Spark's start.
    #[error("line {line}: Malformed \\uxxxx encoding.")]
    MalformedUnicodeEscape { line: usize },
    /// A `\uXXXX` escape that leaves half of a UTF-16 surrogate pair without its other half.
    /// Java keeps such a string; a Rust string cannot hold it, and no key spillway reads could
    /// use it.
    #[error("line {line}: \\u{unit:04X} is half of a UTF-16 surrogate pair without the other half")]
    UnpairedSurrogate { line: usize, unit: u16 },
}

/// Parses properties text as `Properties.load(Reader)` does: key/value pairs in file order
/// (a later duplicate wins when the caller inserts them in order), values untrimmed.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, PropertiesError> {
    // Java fails the whole load on the first malformed escape anywhere, so every line is
    // converted before any surrogate is judged.
    let mut units = Vec::new();
    for line in logical_lines(text) {
        let (key, value) = split_key_value(&line.chars);
        let key_units = load_convert(&line.chars[..key], &line.lines[..key])?;
        let value_units = load_convert(&line.chars[value..], &line.lines[value..])?;
        units.push((
            key_units,
            value_units,
            line.lines.first().copied().unwrap_or(1),
        ));
    }
    units
        .into_iter()
        .map(|(k, v, line)| Ok((from_utf16(&k, line)?, from_utf16(&v, line)?)))
        .collect()
}

/// Spark's `Utils.trimExceptCRLF`, applied to every value read from a properties file: like
/// Java's `String.trim` (every character up to U+0020) but keeping `\r` and `\n`, which can
/// only be there by escape.
pub fn spark_trim(value: &str) -> &str {
    value.trim_matches(|c: char| c <= ' ' && c != '\r' && c != '\n')
}

/// Java's white space in properties files.
fn is_white(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0c')
}

fn is_line_end(c: char) -> bool {
    matches!(c, '\n' | '\r')
}

/// One logical line: its characters, and for each the physical line it came from.
#[derive(Default)]
struct Logical {
    chars: Vec<char>,
    lines: Vec<usize>,
}

/// The input's characters with their 1-based physical line (`\r\n` is one line end).
struct Cursor<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
}

impl Iterator for Cursor<'_> {
    type Item = (char, usize);

    fn next(&mut self) -> Option<(char, usize)> {
        let c = self.chars.next()?;
        let at = self.line;
        if c == '\n' || (c == '\r' && self.chars.peek() != Some(&'\n')) {
            self.line += 1;
        }
        Some((c, at))
    }
}

/// Java's `Properties.LineReader`: joins continued lines, drops comments, blank lines and
/// leading white space.
fn logical_lines(text: &str) -> Vec<Logical> {
    let mut input = Cursor {
        chars: text.chars().peekable(),
        line: 1,
    };
    let mut out = Vec::new();
    let mut buf = Logical::default();
    let mut skip_white = true;
    // Set by a continuation: a line end right after it ends the logical line instead of being
    // skipped as a blank line.
    let mut appended = false;
    let mut backslash = false;
    while let Some((c, at)) = input.next() {
        if skip_white {
            if is_white(c) || (!appended && is_line_end(c)) {
                continue;
            }
            skip_white = false;
            appended = false;
        }
        if buf.chars.is_empty() && (c == '#' || c == '!') {
            // A comment runs to the first line end, whatever precedes it.
            for (c, _) in input.by_ref() {
                if is_line_end(c) {
                    break;
                }
            }
            skip_white = true;
            continue;
        }
        if !is_line_end(c) {
            buf.chars.push(c);
            buf.lines.push(at);
            backslash = c == '\\' && !backslash;
            continue;
        }
        if buf.chars.is_empty() {
            skip_white = true;
        } else if backslash {
            // The odd backslash is not part of the line; the next line's leading white space
            // is skipped, and `\r\n` is one line end.
            buf.chars.pop();
            buf.lines.pop();
            skip_white = true;
            appended = true;
            backslash = false;
            if c == '\r' && input.chars.peek() == Some(&'\n') {
                input.next();
            }
        } else {
            out.push(std::mem::take(&mut buf));
            skip_white = true;
        }
    }
    if !buf.chars.is_empty() {
        // At the end of input an odd backslash is dropped; what is left is a line, even when
        // empty (Java then loads the key "" with the value "").
        if backslash {
            buf.chars.pop();
            buf.lines.pop();
        }
        out.push(buf);
    }
    out
}

/// `Properties.load0`: where the key ends and where the value starts in a logical line.
fn split_key_value(line: &[char]) -> (usize, usize) {
    let mut key_len = 0;
    let mut value_start = line.len();
    let mut has_separator = false;
    let mut backslash = false;
    while key_len < line.len() {
        let c = line[key_len];
        if !backslash && (c == '=' || c == ':') {
            value_start = key_len + 1;
            has_separator = true;
            break;
        }
        if !backslash && is_white(c) {
            value_start = key_len + 1;
            break;
        }
        backslash = c == '\\' && !backslash;
        key_len += 1;
    }
    while value_start < line.len() {
        let c = line[value_start];
        if !is_white(c) {
            if !has_separator && (c == '=' || c == ':') {
                has_separator = true;
            } else {
                break;
            }
        }
        value_start += 1;
    }
    (key_len, value_start)
}

/// `Properties.loadConvert`: resolves escapes into UTF-16 code units (a `\u` escape may name
/// half of a surrogate pair, so the result is not yet a string).
fn load_convert(chars: &[char], lines: &[usize]) -> Result<Vec<u16>, PropertiesError> {
    let mut out = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        if c != '\\' {
            push_utf16(&mut out, c);
            continue;
        }
        // A logical line never ends in an unpaired backslash (the line reader drops it), and a
        // key never does (its end would be escaped), so an escape always has its character.
        let Some(&escaped) = chars.get(i) else {
            break;
        };
        i += 1;
        match escaped {
            'u' => {
                let line = lines[i - 2];
                let hex = chars
                    .get(i..i + 4)
                    .ok_or(PropertiesError::MalformedUnicodeEscape { line })?;
                let mut unit = 0u16;
                for &h in hex {
                    // Java accepts exactly [0-9a-fA-F] here, as `to_digit` does.
                    let digit = h
                        .to_digit(16)
                        .ok_or(PropertiesError::MalformedUnicodeEscape { line })?;
                    unit = (unit << 4) | digit as u16;
                }
                out.push(unit);
                i += 4;
            }
            't' => out.push(u16::from(b'\t')),
            'n' => out.push(u16::from(b'\n')),
            'r' => out.push(u16::from(b'\r')),
            'f' => out.push(0x0c),
            other => push_utf16(&mut out, other),
        }
    }
    Ok(out)
}

fn push_utf16(out: &mut Vec<u16>, c: char) {
    let mut buf = [0u16; 2];
    out.extend_from_slice(c.encode_utf16(&mut buf));
}

fn from_utf16(units: &[u16], line: usize) -> Result<String, PropertiesError> {
    char::decode_utf16(units.iter().copied())
        .map(|r| {
            r.map_err(|e| PropertiesError::UnpairedSurrogate {
                line,
                unit: e.unpaired_surrogate(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse(text).unwrap()
    }

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn separators_comments_and_continuations() {
        let text = "\
# comment
! also a comment

spark.executor.memory   4g
spark.memory.fraction=0.75
spark.memory.storageFraction : 0.5
spark.local.dir /a,\\
    /b
spark.executor.extraJavaOptions -Dx=y -Dz=w  
key\\ with\\ spaces = v
";
        assert_eq!(
            pairs(text),
            vec![
                kv("spark.executor.memory", "4g"),
                kv("spark.memory.fraction", "0.75"),
                kv("spark.memory.storageFraction", "0.5"),
                kv("spark.local.dir", "/a,/b"),
                kv("spark.executor.extraJavaOptions", "-Dx=y -Dz=w  "),
                kv("key with spaces", "v"),
            ]
        );
    }

    #[test]
    fn escapes_and_empty_values() {
        assert_eq!(
            pairs("a=\\u0041\\tb\nb\nc=\n"),
            vec![kv("a", "A\tb"), kv("b", ""), kv("c", "")]
        );
    }

    #[test]
    fn bare_cr_ends_a_line_and_crlf_is_one_end() {
        assert_eq!(
            pairs("a=1\rb=2\r\nc=3\\\r\n  4"),
            vec![kv("a", "1"), kv("b", "2"), kv("c", "34")]
        );
    }

    #[test]
    fn only_space_tab_and_form_feed_are_white_space() {
        assert_eq!(pairs("\x0c k\tv"), vec![kv("k", "v")]);
        assert_eq!(pairs("k\u{b}v"), vec![kv("k\u{b}v", "")]);
        assert_eq!(pairs("\u{a0}k=v"), vec![kv("\u{a0}k", "v")]);
        assert_eq!(pairs("a=1\u{85}b=2"), vec![kv("a", "1\u{85}b=2")]);
    }

    #[test]
    fn malformed_unicode_escape_names_its_line() {
        assert_eq!(
            parse("a=1\n\nb=\\u12G4\n"),
            Err(PropertiesError::MalformedUnicodeEscape { line: 3 })
        );
        // Four hex digits must lie within the key: the separator ends it.
        assert_eq!(
            parse("k\\u00=41"),
            Err(PropertiesError::MalformedUnicodeEscape { line: 1 })
        );
        // A continuation joins the digits, reported where the escape starts.
        assert_eq!(pairs("k=\\u00\\\n  41"), vec![kv("k", "A")]);
        assert_eq!(
            parse("x=1\nk=\\u0\\\n  4"),
            Err(PropertiesError::MalformedUnicodeEscape { line: 2 })
        );
    }

    #[test]
    fn surrogate_escapes_pair_up_or_are_refused() {
        assert_eq!(pairs("k=\\uD83D\\uDE00"), vec![kv("k", "\u{1F600}")]);
        assert_eq!(
            parse("\nk=\\uD83Dx"),
            Err(PropertiesError::UnpairedSurrogate {
                line: 2,
                unit: 0xD83D
            })
        );
    }

    #[test]
    fn spark_trim_keeps_escaped_line_ends() {
        assert_eq!(spark_trim(" \t\x0c\u{b}\u{1}v w \u{0}"), "v w");
        assert_eq!(spark_trim("\r\n v \n"), "\r\n v \n");
        assert_eq!(spark_trim("\u{a0}v\u{a0}"), "\u{a0}v\u{a0}");
        assert_eq!(spark_trim("  "), "");
    }
}
