//! Which component answers a request on the shared `[edge]` listeners: by host (exact names
//! before wildcards, the longest wildcard first), then by the longest matching path prefix;
//! else the default component, if one is configured. Pure: built from the components'
//! `hosts`/`path_prefix` and swapped whole (an `ArcSwap` in the server), so a deploy, rollback
//! or reload of one component never disturbs another's routes.

use crate::config::HostPattern;
use std::collections::HashMap;

pub struct RouteTable<T> {
    exact: HashMap<String, Vec<Entry<T>>>,
    /// By suffix (`.example.com`), the longest first.
    wildcard: Vec<(String, Vec<Entry<T>>)>,
    default: Option<T>,
}

struct Entry<T> {
    prefix: String,
    strip: bool,
    target: T,
}

/// A route found for a request.
pub struct Routed<'a, T> {
    pub target: &'a T,
    /// The prefix to remove from the path before the request goes on, if the route strips it.
    pub strip: Option<&'a str>,
}

/// One component's place in the table.
pub struct RouteSpec<T> {
    pub host: HostPattern,
    pub prefix: String,
    pub strip: bool,
    pub target: T,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        RouteTable {
            exact: HashMap::new(),
            wildcard: Vec::new(),
            default: None,
        }
    }
}

impl<T> RouteTable<T> {
    pub fn new(routes: impl IntoIterator<Item = RouteSpec<T>>, default: Option<T>) -> Self {
        let mut table = RouteTable {
            default,
            ..RouteTable::default()
        };
        for route in routes {
            let entry = Entry {
                prefix: route.prefix,
                strip: route.strip,
                target: route.target,
            };
            let entries = match route.host {
                HostPattern::Exact(name) => table.exact.entry(name).or_default(),
                HostPattern::Wildcard(suffix) => {
                    match table.wildcard.iter().position(|(s, _)| *s == suffix) {
                        Some(i) => &mut table.wildcard[i].1,
                        None => {
                            table.wildcard.push((suffix, Vec::new()));
                            &mut table.wildcard.last_mut().expect("just pushed").1
                        }
                    }
                }
            };
            entries.push(entry);
        }
        for entries in table.exact.values_mut() {
            entries.sort_by_key(|e| std::cmp::Reverse(e.prefix.len()));
        }
        for (_, entries) in &mut table.wildcard {
            entries.sort_by_key(|e| std::cmp::Reverse(e.prefix.len()));
        }
        table
            .wildcard
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        table
    }

    /// The route for `host` (as [`normalize_host`] gives it) and `path`.
    pub fn lookup(&self, host: &str, path: &str) -> Option<Routed<'_, T>> {
        if let Some(found) = self.exact.get(host).and_then(|e| by_prefix(e, path)) {
            return Some(found);
        }
        for (suffix, entries) in &self.wildcard {
            if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                if let Some(found) = by_prefix(entries, path) {
                    return Some(found);
                }
            }
        }
        self.default.as_ref().map(|target| Routed {
            target,
            strip: None,
        })
    }

    /// Every exact host and wildcard routed (for certificates and redirects).
    pub fn names(&self) -> impl Iterator<Item = String> + '_ {
        self.exact
            .keys()
            .cloned()
            .chain(self.wildcard.iter().map(|(s, _)| format!("*{s}")))
    }
}

/// The entry with the longest prefix that matches `path` (entries are sorted longest first).
fn by_prefix<'a, T>(entries: &'a [Entry<T>], path: &str) -> Option<Routed<'a, T>> {
    entries
        .iter()
        .find(|e| prefix_matches(&e.prefix, path))
        .map(|e| Routed {
            target: &e.target,
            strip: (e.strip && e.prefix != "/").then_some(e.prefix.as_str()),
        })
}

/// `/api` matches `/api`, `/api/` and `/api/x`, not `/apix`; `/` matches everything.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The path with `prefix` removed (`/api/users` -> `/users`, `/api` -> `/`), query kept.
pub fn strip_prefix(path_and_query: &str, prefix: &str) -> String {
    let rest = path_and_query
        .strip_prefix(prefix)
        .unwrap_or(path_and_query);
    if rest.is_empty() || rest.starts_with('?') {
        format!("/{rest}")
    } else {
        rest.to_owned()
    }
}

/// A request's host as routed: lowercase, without port or trailing dot. `None` when it is not
/// a name (an empty or malformed authority).
pub fn normalize_host(authority: &str) -> Option<String> {
    let host = if authority.starts_with('[') {
        // An IPv6 literal keeps its brackets; the port is after them.
        let end = authority.find(']')?;
        &authority[..=end]
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    let host = host.trim_end_matches('.');
    if host.is_empty() {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(
        host: &str,
        prefix: &str,
        strip: bool,
        target: &'static str,
    ) -> RouteSpec<&'static str> {
        RouteSpec {
            host: HostPattern::parse(host).unwrap(),
            prefix: prefix.to_owned(),
            strip,
            target,
        }
    }

    fn table(default: Option<&'static str>) -> RouteTable<&'static str> {
        RouteTable::new(
            [
                route("example.com", "/", false, "frontend"),
                route("www.example.com", "/", false, "frontend"),
                route("example.com", "/api", true, "backend"),
                route("example.com", "/api/admin", false, "admin"),
                route("*.example.com", "/", false, "tenants"),
                route("*.eu.example.com", "/", false, "eu"),
            ],
            default,
        )
    }

    fn target(
        table: &RouteTable<&'static str>,
        host: &str,
        path: &str,
    ) -> Option<(&'static str, Option<String>)> {
        table
            .lookup(host, path)
            .map(|r| (*r.target, r.strip.map(str::to_owned)))
    }

    #[test]
    fn exact_hosts_then_the_longest_prefix() {
        let t = table(None);
        assert_eq!(target(&t, "example.com", "/"), Some(("frontend", None)));
        assert_eq!(
            target(&t, "example.com", "/about"),
            Some(("frontend", None))
        );
        assert_eq!(
            target(&t, "example.com", "/api/users"),
            Some(("backend", Some("/api".into())))
        );
        assert_eq!(
            target(&t, "example.com", "/api"),
            Some(("backend", Some("/api".into())))
        );
        assert_eq!(target(&t, "example.com", "/apix"), Some(("frontend", None)));
        assert_eq!(
            target(&t, "example.com", "/api/admin/x"),
            Some(("admin", None))
        );
        assert_eq!(
            target(&t, "www.example.com", "/api"),
            Some(("frontend", None))
        );
    }

    #[test]
    fn wildcards_match_subdomains_only_the_longest_first() {
        let t = table(None);
        assert_eq!(target(&t, "acme.example.com", "/"), Some(("tenants", None)));
        assert_eq!(target(&t, "a.b.example.com", "/x"), Some(("tenants", None)));
        assert_eq!(target(&t, "paris.eu.example.com", "/"), Some(("eu", None)));
        assert_eq!(target(&t, "eu.example.com", "/"), Some(("tenants", None)));
        assert_eq!(target(&t, "example.org", "/"), None);
        assert_eq!(target(&t, "notexample.com", "/"), None);
    }

    #[test]
    fn unknown_hosts_go_to_the_default_when_there_is_one() {
        let t = table(Some("frontend"));
        assert_eq!(target(&t, "example.org", "/api"), Some(("frontend", None)));
    }

    #[test]
    fn hosts_are_normalized_and_prefixes_stripped() {
        assert_eq!(
            normalize_host("Example.COM:8443").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            normalize_host("example.com.").as_deref(),
            Some("example.com")
        );
        assert_eq!(normalize_host("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(normalize_host(":80"), None);
        assert_eq!(strip_prefix("/api/users?x=1", "/api"), "/users?x=1");
        assert_eq!(strip_prefix("/api", "/api"), "/");
        assert_eq!(strip_prefix("/api?x=1", "/api"), "/?x=1");
    }
}
