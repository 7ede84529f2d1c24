//! Fills the workflow's templates (`templates/`), so that the code that writes the workflow
//! reads as the YAML and bash it writes.
//!
//! - `%{name}` is replaced by a text value; a line holding only `%{name}` is replaced by the
//!   lines of a block value, each indented like the placeholder (no lines: no line);
//! - the lines between `%{if name}` and `%{end}` are kept only when the flag `name` is on (or
//!   the optional text `name` is there);
//! - lines starting with `%#` are comments about the template, left out.
//!
//! Values are inserted as given, never scanned again: quoting them is the caller's job. A
//! placeholder without a value is a bug in the generator and panics (every template and branch
//! is rendered by the tests).

use std::collections::BTreeMap;

enum Value {
    /// `None`: a text the template may test with `%{if}` but must not use.
    Text(Option<String>),
    Lines(Vec<String>),
    Flag(bool),
}

/// The values of one rendering of a template.
#[derive(Default)]
pub(super) struct Fill {
    values: BTreeMap<&'static str, Value>,
}

impl Fill {
    pub(super) fn text(&mut self, name: &'static str, value: impl Into<String>) -> &mut Self {
        self.optional(name, Some(value.into()))
    }

    /// A text that may be missing: `%{if name}` tells which.
    pub(super) fn optional(&mut self, name: &'static str, value: Option<String>) -> &mut Self {
        // A text is one line; lines go in a block, where they get the placeholder's indent.
        assert!(
            !value.as_ref().is_some_and(|v| v.contains('\n')),
            "text value %{{{name}}} holds a newline"
        );
        self.values.insert(name, Value::Text(value));
        self
    }

    pub(super) fn lines(
        &mut self,
        name: &'static str,
        lines: impl IntoIterator<Item = String>,
    ) -> &mut Self {
        self.values
            .insert(name, Value::Lines(lines.into_iter().collect()));
        self
    }

    /// A block of the lines of `text` (a rendered template, say).
    pub(super) fn block(&mut self, name: &'static str, text: &str) -> &mut Self {
        self.lines(name, text.lines().map(String::from))
    }

    pub(super) fn flag(&mut self, name: &'static str, on: bool) -> &mut Self {
        self.values.insert(name, Value::Flag(on));
        self
    }

    pub(super) fn render(&self, template: &str) -> String {
        let mut out = String::new();
        // One entry per open `%{if}`: whether its flag is set.
        let mut conditions: Vec<bool> = Vec::new();
        for line in template.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("%#") {
                continue;
            }
            if let Some(name) = directive(trimmed, "if ") {
                conditions.push(self.flag_value(name));
                continue;
            }
            if trimmed == "%{end}" {
                assert!(conditions.pop().is_some(), "%{{end}} without %{{if}}");
                continue;
            }
            if conditions.contains(&false) {
                continue;
            }
            let indent = &line[..line.len() - trimmed.len()];
            match directive(trimmed, "").map(|name| (name, self.values.get(name))) {
                Some((_, Some(Value::Lines(lines)))) => {
                    for l in lines {
                        if !l.is_empty() {
                            out.push_str(indent);
                            out.push_str(l);
                        }
                        out.push('\n');
                    }
                }
                _ => {
                    self.substitute(line, &mut out);
                    out.push('\n');
                }
            }
        }
        assert!(conditions.is_empty(), "%{{if}} without %{{end}}");
        out
    }

    /// Appends `line` with each `%{name}` replaced by its text value.
    fn substitute(&self, line: &str, out: &mut String) {
        let mut rest = line;
        while let Some(start) = rest.find("%{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .unwrap_or_else(|| panic!("unclosed placeholder in template line {line:?}"));
            match self.values.get(&after[..end]) {
                Some(Value::Text(Some(text))) => out.push_str(text),
                _ => panic!("no text value for %{{{}}}", &after[..end]),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }

    fn flag_value(&self, name: &str) -> bool {
        match self.values.get(name) {
            Some(Value::Flag(on)) => *on,
            Some(Value::Text(text)) => text.is_some(),
            _ => panic!("no flag or text for %{{if {name}}}"),
        }
    }
}

/// `name` of a line that is exactly `%{<keyword>name}`.
fn directive<'a>(trimmed: &'a str, keyword: &str) -> Option<&'a str> {
    let name = trimmed.strip_prefix("%{")?.strip_suffix('}')?;
    let name = name.strip_prefix(keyword)?;
    let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    plain.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_texts_blocks_and_sections() {
        let template = "\
%# left out
a: %{a}
  %{block}
  %{empty}
%{if on}
on: %{a}
%{end}
  %{if off}
off: %{missing}
  %{end}
%{if given}
given: %{given}
%{end}
%{if absent}
absent: %{absent}
%{end}
";
        let out = Fill::default()
            .text("a", "'x'")
            .lines("block", ["- 1".to_owned(), String::new(), "- 2".to_owned()])
            .lines("empty", [])
            .flag("on", true)
            .flag("off", false)
            .optional("given", Some("yes".into()))
            .optional("absent", None)
            .render(template);
        assert_eq!(out, "a: 'x'\n  - 1\n\n  - 2\non: 'x'\ngiven: yes\n");
    }

    #[test]
    fn values_are_not_filled_in_again() {
        let out = Fill::default()
            .text("a", "%{b}")
            .text("b", "no")
            .render("%{a} %{b}\n");
        assert_eq!(out, "%{b} no\n");
    }

    #[test]
    #[should_panic(expected = "no text value for %{b}")]
    fn a_placeholder_without_a_value_is_a_bug() {
        Fill::default().render("%{b}\n");
    }
}
