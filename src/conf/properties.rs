//! Java `.properties` syntax, as `spark-defaults.conf` is read (`java.util.Properties.load`,
//! then values trimmed by Spark's `Utils.getPropertiesFromFile`).

/// Parses properties text into key/value pairs in file order (later duplicates win when the
/// caller inserts them in order).
pub fn parse(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(first) = lines.next() {
        let trimmed = first.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
            continue;
        }
        // A line ending in an odd number of backslashes continues on the next line, whose
        // leading white space is dropped.
        let mut logical = String::from(trimmed);
        while ends_with_odd_backslashes(&logical) {
            logical.pop();
            match lines.next() {
                Some(next) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let (key, value) = split_key_value(&logical);
        out.push((unescape(&key), unescape(&value).trim().to_string()));
    }
    out
}

fn ends_with_odd_backslashes(s: &str) -> bool {
    s.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// The key ends at the first unescaped '=', ':' or white space; the separator may be white
/// space followed by one '=' or ':'.
fn split_key_value(line: &str) -> (String, String) {
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    let mut key = String::new();
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && i + 1 < chars.len() {
            key.push(c);
            key.push(chars[i + 1]);
            i += 2;
            continue;
        }
        if c == '=' || c == ':' || c.is_whitespace() {
            break;
        }
        key.push(c);
        i += 1;
    }
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    if i < chars.len() && (chars[i] == '=' || chars[i] == ':') {
        i += 1;
    }
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    (key, chars[i..].iter().collect())
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(ch) => out.push(ch),
                    None => out.push_str(&hex),
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse(text)
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
        let p = pairs(text);
        assert_eq!(
            p,
            vec![
                ("spark.executor.memory".into(), "4g".into()),
                ("spark.memory.fraction".into(), "0.75".into()),
                ("spark.memory.storageFraction".into(), "0.5".into()),
                ("spark.local.dir".into(), "/a,/b".into()),
                (
                    "spark.executor.extraJavaOptions".into(),
                    "-Dx=y -Dz=w".into()
                ),
                ("key with spaces".into(), "v".into()),
            ]
        );
    }

    #[test]
    fn escapes_and_empty_values() {
        let p = pairs("a=\\u0041\\tb\nb\nc=\n");
        assert_eq!(
            p,
            vec![
                ("a".into(), "A\tb".into()),
                ("b".into(), "".into()),
                ("c".into(), "".into()),
            ]
        );
    }
}
