//! Service URLs: masking their secrets for display, and the small parse the Redis check needs.
//!
//! [`redact_url`] errs on the side of masking too much: a malformed URL whose password holds an
//! unescaped `/` or `?` is still masked up to its last `@`.

/// Query parameters and libpq keys whose values are secrets.
const SECRET_KEYS: &[&str] = &["password", "pass", "passwd", "pwd"];

const MASK: &str = "****";

/// Masks the password of a service URL: `postgres://app:****@db:5432/app`. Also masks
/// `password=` query parameters and the `password` of a libpq key=value string
/// (`host=db password=****`). Without a password the input comes back unchanged.
pub fn redact_url(url: &str) -> String {
    match url.find("://") {
        Some(i) => redact_url_form(url, i + 3),
        None => redact_key_value_form(url),
    }
}

fn redact_url_form(url: &str, authority_start: usize) -> String {
    let rest = &url[authority_start..];
    // The userinfo ends at the last '@' before the query; failing that (a password with an
    // unescaped '?'), at the last '@' anywhere.
    let query_start = rest.find(['?', '#']).unwrap_or(rest.len());
    let at = rest[..query_start].rfind('@').or_else(|| rest.rfind('@'));
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..authority_start]);
    let after_userinfo = match at {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(colon) if colon + 1 < userinfo.len() => {
                    out.push_str(&userinfo[..colon + 1]);
                    out.push_str(MASK);
                }
                _ => out.push_str(userinfo),
            }
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    match after_userinfo.find('?') {
        Some(q) => {
            out.push_str(&after_userinfo[..q + 1]);
            let (query, fragment) = match after_userinfo[q + 1..].find('#') {
                Some(h) => after_userinfo[q + 1..].split_at(h),
                None => (&after_userinfo[q + 1..], ""),
            };
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, _)) if is_secret_key(key) => format!("{key}={MASK}"),
                    _ => param.to_string(),
                })
                .collect();
            out.push_str(&params.join("&"));
            out.push_str(fragment);
        }
        None => out.push_str(after_userinfo),
    }
    out
}

fn is_secret_key(key: &str) -> bool {
    SECRET_KEYS
        .iter()
        .any(|k| key.trim().eq_ignore_ascii_case(k))
}

/// libpq's `key=value key='quoted \' value'` form.
fn redact_key_value_form(dsn: &str) -> String {
    let bytes = dsn.as_bytes();
    let mut out = String::with_capacity(dsn.len());
    let mut i = 0;
    while i < bytes.len() {
        // Copy whitespace.
        if bytes[i].is_ascii_whitespace() {
            out.push(bytes[i] as char);
            i += 1;
            continue;
        }
        // A key runs to '=' (or whitespace, for a malformed token).
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &dsn[key_start..i];
        out.push_str(key);
        // Spaces may surround '='.
        let mut j = i;
        while j < bytes.len() && bytes[j].is_ascii_whitespace() {
            j += 1;
        }
        if j >= bytes.len() || bytes[j] != b'=' {
            continue;
        }
        out.push_str(&dsn[i..=j]);
        i = j + 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            out.push(bytes[i] as char);
            i += 1;
        }
        let value_start = i;
        if i < bytes.len() && bytes[i] == b'\'' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'\'' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(bytes.len());
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i = i.min(bytes.len());
        }
        if is_secret_key(key) {
            out.push_str(MASK);
        } else {
            out.push_str(&dsn[value_start..i]);
        }
    }
    out
}

/// The parts of a `scheme://[user[:password]@]host[:port][/path]` URL that a check needs.
/// Only ever built from a URL; its `Debug` masks the password.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ServiceUrl {
    pub scheme: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// Without the leading `/`; empty when absent.
    pub path: String,
}

impl std::fmt::Debug for ServiceUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceUrl")
            .field("scheme", &self.scheme)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| MASK))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("path", &self.path)
            .finish()
    }
}

impl ServiceUrl {
    /// Parses `url`. Errors describe the problem without quoting the URL (it may hold a secret).
    pub fn parse(url: &str) -> Result<ServiceUrl, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or("the URL has no scheme (expected scheme://host)")?;
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return Err("the URL's scheme is not valid".into());
        }
        let query_start = rest.find(['?', '#']).unwrap_or(rest.len());
        let before_query = &rest[..query_start];
        let (userinfo, host_part) = match before_query.rfind('@') {
            Some(at) => (Some(&before_query[..at]), &before_query[at + 1..]),
            None => (None, before_query),
        };
        let (authority, path) = match host_part.find('/') {
            Some(slash) => (&host_part[..slash], &host_part[slash + 1..]),
            None => (host_part, ""),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, password) = match info.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (info, None),
                };
                let user = percent_decode(user).ok_or("the URL's user name is not valid")?;
                let password = password
                    .map(percent_decode)
                    .map(|p| p.ok_or("the URL's password is not valid percent-encoding"))
                    .transpose()?;
                (
                    (!user.is_empty()).then_some(user),
                    password.filter(|p| !p.is_empty()),
                )
            }
        };
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let end = bracketed
                .find(']')
                .ok_or("the URL's IPv6 host has no closing ']'")?;
            let host = &bracketed[..end];
            let port = match &bracketed[end + 1..] {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or("the URL's port is not valid")?),
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        let port = match port {
            None | Some("") => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("the URL's port {p:?} is not a number from 0 to 65535"))?,
            ),
        };
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        Ok(ServiceUrl {
            scheme: scheme.to_ascii_lowercase(),
            user,
            password,
            host,
            port,
            path: path.to_string(),
        })
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_url_passwords() {
        let cases = [
            (
                "postgres://app:s3cret@db:5432/app",
                "postgres://app:****@db:5432/app",
            ),
            ("postgres://app@db/app", "postgres://app@db/app"),
            ("postgres://db/app", "postgres://db/app"),
            (
                "redis://:s3cret@127.0.0.1:6379/0",
                "redis://:****@127.0.0.1:6379/0",
            ),
            ("redis://default:s3cret@cache", "redis://default:****@cache"),
            // An unescaped '@', '/' or '?' in the password: still masked.
            ("postgres://app:p@ss@db/app", "postgres://app:****@db/app"),
            ("postgres://app:pa/ss@db/app", "postgres://app:****@db/app"),
            ("postgres://app:pa?ss@db/app", "postgres://app:****@db/app"),
            (
                "postgres://db/app?sslmode=disable&password=s3cret",
                "postgres://db/app?sslmode=disable&password=****",
            ),
            (
                "postgres://u:s3cret@db/app?application_name=x#frag",
                "postgres://u:****@db/app?application_name=x#frag",
            ),
            (
                "host=db user=app password=s3cret dbname=app",
                "host=db user=app password=**** dbname=app",
            ),
            (
                "host=db password = 's3 cr\\'et' dbname=app",
                "host=db password = **** dbname=app",
            ),
            ("host=db PASSWORD='x'", "host=db PASSWORD=****"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_url(input), expected, "input {input}");
        }
    }

    #[test]
    fn parses_service_urls() {
        let u = ServiceUrl::parse("redis://us%40er:p%3Ass@cache.local:6380/2?x=1").unwrap();
        assert_eq!(u.scheme, "redis");
        assert_eq!(u.user.as_deref(), Some("us@er"));
        assert_eq!(u.password.as_deref(), Some("p:ss"));
        assert_eq!(u.host, "cache.local");
        assert_eq!(u.port, Some(6380));
        assert_eq!(u.path, "2");
        assert!(!format!("{u:?}").contains("p:ss"));

        let u = ServiceUrl::parse("redis://:secret@[::1]:7000").unwrap();
        assert_eq!((u.user, u.password.as_deref()), (None, Some("secret")));
        assert_eq!((u.host.as_str(), u.port), ("::1", Some(7000)));

        let u = ServiceUrl::parse("redis://localhost").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.password),
            ("localhost", None, None)
        );
    }

    #[test]
    fn parse_errors_never_quote_the_url() {
        for bad in [
            "redis:/nohost",
            "redis://:secret@host:notaport",
            "redis://:secret@",
            "redis://:%zz@h",
        ] {
            let err = ServiceUrl::parse(bad).unwrap_err();
            assert!(!err.contains("secret"), "{err}");
        }
    }
}
