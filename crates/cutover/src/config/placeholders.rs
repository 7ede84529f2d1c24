//! `{name}` placeholders in commands, env values and hook URLs: what is wrong with one.

/// What is wrong with the first bad placeholder in `value`: a `{name}` that is not one of
/// `known`, or a `{` never closed (which would otherwise reach the program as written).
pub(super) fn placeholder_problem(value: &str, known: &[&str]) -> Option<String> {
    let mut rest = value;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            let written = &rest[open..];
            let hint = known
                .iter()
                .find(|k| written[1..].starts_with(**k))
                .map(|k| format!("write {{{k}}}"))
                .unwrap_or_else(|| format!("known: {}", braced(known)));
            return Some(format!("unclosed placeholder {written:?}; {hint}"));
        };
        let name = &after[..close];
        if !known.contains(&name) {
            return Some(format!(
                "unknown placeholder {{{name}}}; known: {}",
                braced(known)
            ));
        }
        rest = &after[close + 1..];
    }
    None
}

fn braced(known: &[&str]) -> String {
    let known: Vec<String> = known.iter().map(|p| format!("{{{p}}}")).collect();
    known.join(", ")
}
