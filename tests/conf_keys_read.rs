//! Every configuration key spillway accepts either has an effect — its constant is read
//! somewhere outside the key table — or is listed in `keys::NOT_MODELLED`, whose keys log a
//! warning when set. A key in neither would be accepted silently and do nothing.

use std::path::Path;

use spillway::conf::{SparkConf, keys};

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path.display().to_string(), text));
        }
    }
}

/// Source text outside `#[cfg(test)]` modules (cut at the first `mod tests`).
fn non_test(text: &str) -> &str {
    match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    }
}

#[test]
fn every_accepted_key_has_an_effect_or_a_warning() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // rustfmt breaks a long `pub const NAME: &str =` line before its string.
    let table = std::fs::read_to_string(root.join("src/conf/keys.rs"))
        .unwrap()
        .replace("=\n    \"", "= \"");
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    let mut silent = Vec::new();
    for def in keys::KEYS {
        let not_modelled = keys::NOT_MODELLED.iter().any(|(k, _)| *k == def.key);
        // The constant that names the key in the table.
        let needle = format!("\"{}\";", def.key);
        let constant = table
            .lines()
            .find(|l| l.starts_with("pub const ") && l.contains(&needle))
            .and_then(|l| l.strip_prefix("pub const "))
            .and_then(|l| l.split(':').next())
            .map(str::to_string);
        let read = files.iter().any(|(path, text)| {
            !path.ends_with("conf/keys.rs") && {
                let code = non_test(text);
                constant
                    .as_ref()
                    .is_some_and(|c| code.contains(&format!("keys::{c}")))
                    || code.contains(&format!("\"{}\"", def.key))
            }
        });
        match (read, not_modelled) {
            (true, true) => silent.push(format!("{}: read, yet listed as not modelled", def.key)),
            (false, false) => silent.push(format!("{}: read nowhere and no warning", def.key)),
            _ => {}
        }
    }
    assert!(silent.is_empty(), "{silent:#?}");
}

#[test]
fn a_key_that_is_not_modelled_warns_when_set() {
    for (key, why) in keys::NOT_MODELLED {
        assert!(keys::lookup(key).is_some(), "{key} is not in the key table");
        let conf = SparkConf::new().with(key, "1");
        let warnings = conf.warnings();
        assert!(
            warnings.iter().any(|w| w.contains(key) && w.contains(why)),
            "{key}: {warnings:?}"
        );
        assert!(SparkConf::new().warnings().is_empty());
    }
}
