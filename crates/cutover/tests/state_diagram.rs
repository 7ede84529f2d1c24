//! ARCHITECTURE.md's state diagram names exactly the deploy machine's states and effects, and
//! nothing that is not one of its states, effects or events.

use std::collections::BTreeSet;

const MACHINE: &str = include_str!("../src/deploy/machine.rs");
const ARCHITECTURE: &str = include_str!("../../../ARCHITECTURE.md");

/// The variant names of `pub enum NAME { ... }` in the machine's source.
fn variants(name: &str) -> BTreeSet<String> {
    let start = MACHINE
        .find(&format!("pub enum {name} {{"))
        .unwrap_or_else(|| panic!("machine.rs has no `pub enum {name}`"));
    let body = &MACHINE[start..];
    let body = &body[body.find('{').unwrap() + 1..];
    let mut depth = 0usize;
    let mut names = BTreeSet::new();
    for line in body.lines() {
        let trimmed = line.trim();
        if depth == 0 && trimmed.starts_with('}') {
            break;
        }
        if depth == 0 && !trimmed.starts_with("//") && !trimmed.starts_with('#') {
            let ident: String = trimmed
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if ident.starts_with(|c: char| c.is_ascii_uppercase()) {
                names.insert(ident);
            }
        }
        depth += line.matches(['{', '(']).count();
        depth = depth.saturating_sub(line.matches(['}', ')']).count());
    }
    assert!(!names.is_empty(), "no variants found in {name}");
    names
}

fn diagram() -> &'static str {
    let start = ARCHITECTURE
        .find("<!-- state-diagram -->")
        .expect("ARCHITECTURE.md has a <!-- state-diagram --> block");
    let end = ARCHITECTURE
        .find("<!-- /state-diagram -->")
        .expect("the state diagram block is closed");
    &ARCHITECTURE[start..end]
}

/// Words in CamelCase (at least one lower-case letter after the first capital).
fn camel_words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| {
            w.starts_with(|c: char| c.is_ascii_uppercase())
                && w.chars().skip(1).any(|c| c.is_ascii_lowercase())
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_diagram_names_every_state_and_effect_and_nothing_else() {
    let states = variants("State");
    let effects = variants("Effect");
    let events = variants("Event");
    let words = camel_words(diagram());
    for state in &states {
        assert!(
            words.contains(state),
            "state {state} is missing from the diagram"
        );
    }
    for effect in &effects {
        assert!(
            words.contains(effect),
            "effect {effect} is missing from the diagram"
        );
    }
    for word in &words {
        assert!(
            states.contains(word) || effects.contains(word) || events.contains(word),
            "the diagram names {word}, which is no State, Effect or Event of deploy/machine.rs"
        );
    }
}
