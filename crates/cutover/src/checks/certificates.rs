//! What `cutover check` says of a certificate: a warning when it expires soon or its last
//! renewal failed (never a failure: the certificate still serves, and check's exit code is for
//! what is down now).

use crate::protocol::CertificateInfo;

/// A certificate with less left than this is worth a look (ACME renews 30 days before a
/// 90-day certificate expires, so a healthy one never gets here).
pub const EXPIRY_WARNING_DAYS: i64 = 14;

const DAY_MS: i64 = 86_400_000;

/// Why `cert` deserves a warning at `now_ms`, if it does.
pub fn certificate_warning(cert: &CertificateInfo, now_ms: i64) -> Option<String> {
    let mut problems = Vec::new();
    if let Some(not_after) = cert.not_after {
        let left = not_after - now_ms;
        if left <= 0 {
            problems.push("EXPIRED".to_owned());
        } else if left < EXPIRY_WARNING_DAYS * DAY_MS {
            problems.push(format!("expires in {} days", left / DAY_MS));
        }
    }
    if let Some(error) = &cert.last_error {
        problems.push(match cert.failures {
            0 => error.clone(),
            1 => format!("last renewal failed: {error}"),
            n => format!("last {n} renewals failed: {error}"),
        });
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::CertSource;

    fn cert(not_after: Option<i64>, failures: u32, last_error: Option<&str>) -> CertificateInfo {
        CertificateInfo {
            name: "a.example".into(),
            hosts: vec!["a.example".into()],
            source: CertSource::Acme,
            path: "/d/certs/a.example/cert.pem".into(),
            challenge: Some("http-01".into()),
            not_before: None,
            not_after,
            renew_at: None,
            next_attempt: None,
            issuing: false,
            failures,
            last_error: last_error.map(str::to_owned),
            last_attempt: None,
        }
    }

    #[test]
    fn warns_under_fourteen_days_or_after_a_failed_renewal() {
        let now = 1_000 * DAY_MS;
        assert_eq!(
            certificate_warning(&cert(Some(now + 60 * DAY_MS), 0, None), now),
            None
        );
        assert_eq!(
            certificate_warning(&cert(Some(now + 13 * DAY_MS + 5), 0, None), now).unwrap(),
            "expires in 13 days"
        );
        assert_eq!(
            certificate_warning(&cert(Some(now - 1), 0, None), now).unwrap(),
            "EXPIRED"
        );
        assert_eq!(
            certificate_warning(&cert(None, 2, Some("x: the http-01 challenge failed")), now)
                .unwrap(),
            "last 2 renewals failed: x: the http-01 challenge failed"
        );
        // Not issued yet and nothing failed: the first order is under way.
        assert_eq!(certificate_warning(&cert(None, 0, None), now), None);
    }
}
