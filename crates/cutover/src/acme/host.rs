//! Which names may be ordered: DNS host names only (they also name a directory under
//! `data_dir/certs`, so nothing that could walk out of it), lower case.

use super::AcmeError;

/// `host` lower-cased, or why a CA would refuse it (or why it cannot be a directory name).
pub(super) fn orderable(host: &str) -> Result<String, AcmeError> {
    let invalid = |reason| AcmeError::InvalidHost {
        host: host.to_owned(),
        reason,
    };
    let name = host.to_ascii_lowercase();
    if name.starts_with("*.") {
        return Err(invalid(
            "a wildcard needs the DNS-01 challenge, which cutover does not answer",
        ));
    }
    if name.is_empty() || name.len() > 253 {
        return Err(invalid("a host name has 1 to 253 characters"));
    }
    for label in name.split('.') {
        let ok_chars = label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if label.is_empty() || label.len() > 63 || !ok_chars {
            return Err(invalid(
                "not a DNS name (labels of letters, digits and '-', separated by dots)",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("a DNS label cannot start or end with '-'"));
        }
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(invalid("an IP address, not a host name"));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_host_names_lower_cased() {
        assert_eq!(orderable("API.Example.com").unwrap(), "api.example.com");
        assert_eq!(orderable("a-1.b").unwrap(), "a-1.b");
    }

    #[test]
    fn refuses_what_is_not_a_host_name() {
        for bad in [
            "", ".", "a..b", "../etc", "a/b", "-a.b", "a-.b", "a b", "1.2.3.4", "*.x.com", "x.*",
        ] {
            let err = orderable(bad).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("{bad}: cannot order")),
                "{bad}: {err}"
            );
        }
    }
}
